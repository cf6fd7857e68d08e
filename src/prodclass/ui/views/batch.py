"""Batch: a CSV in the challenge layout (+ an optional zip of its photos) classified through
the API's streaming zip endpoint, with progress, a results table and a CSV download."""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath

import pandas as pd
import streamlit as st

from prodclass.data.layout import nul_fields, read_challenge_csv
from prodclass.files import spreadsheet_safe_csv
from prodclass.ui import session
from prodclass.ui.views.common import label

COLUMNS = ["designation", "description", "productid", "imageid"]


def read_products(csv: bytes) -> pd.DataFrame:
    """The uploaded CSV, refused with a reason when it is not in the challenge layout."""
    try:
        rows = read_challenge_csv(csv)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the file is not a readable CSV ({exc})") from None
    if found := nul_fields(rows):  # the API refuses such a CSV; say where, before sending it
        where = "; ".join(f"row {row}: {column} holds a NUL character" for row, column, _ in found)
        raise ValueError(f"{where} (\\u0000, which no stored text can hold)")
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"the CSV lacks the columns {', '.join(missing)} (challenge layout)")
    return rows


def build_archive(csv: bytes, photos_zip: bytes | None) -> bytes:
    """One zip the API reads: the CSV as X_batch.csv and every photo of the uploaded zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("X_batch.csv", csv)
        if photos_zip:
            try:
                source = zipfile.ZipFile(io.BytesIO(photos_zip))
            except zipfile.BadZipFile:
                raise ValueError("the photos file is not a zip") from None
            for entry in source.infolist():
                name = PurePosixPath(entry.filename).name
                if name.startswith("image_") and not entry.is_dir():
                    out.writestr(f"images/{name}", source.read(entry))
    return buffer.getvalue()


def results_table(lines: list[dict]) -> pd.DataFrame:
    rows = []
    for line in lines:
        if "error" in line:
            rows.append({"row": line["row"], "error": line["error"]})
            continue
        rows.append(
            {
                "row": line["row"],
                "prdtypecode": line["prdtypecode"],
                "category": label(line["prdtypecode"]),
                "probability": line["category"]["probability"],
                "inputs": line["inputs"],
                "model_version": line["model"]["version"],
                "prediction_id": line["prediction_id"],
                "error": "",
            }
        )
    return pd.DataFrame(rows).set_index("row")


def render() -> None:
    st.header("Classify a batch")
    st.caption(
        "A CSV in the challenge layout (like X_test_update.csv: designation, description, "
        "productid, imageid) and, optionally, a zip of its photos "
        "(image_<imageid>_product_<productid>.jpg)."
    )
    csv = st.file_uploader("Products (CSV)", type=["csv"], key="batch-csv")
    photos = st.file_uploader("Photos (zip, optional)", type=["zip"], key="batch-photos")
    if csv is None or not st.button("Classify all", type="primary"):
        return
    try:
        products = read_products(csv.getvalue())
        archive = build_archive(csv.getvalue(), photos.getvalue() if photos else None)
    except ValueError as exc:
        st.error(str(exc))
        return
    progress = st.progress(0.0, text=f"0 / {len(products)}")
    lines: list[dict] = []
    stream = session.client().predict_zip(archive)
    try:
        for line in stream:
            lines.append(line)
            progress.progress(len(lines) / len(products), text=f"{len(lines)} / {len(products)}")
    except session.ApiError as exc:
        st.error(str(exc))
        if not lines:
            return
    table = results_table(lines)
    st.dataframe(table, use_container_width=True)
    st.download_button(
        "Download results (CSV)", spreadsheet_safe_csv(table), "predictions.csv", "text/csv"
    )
