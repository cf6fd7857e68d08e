"""Models (admin): versions and their test metrics, per-class F1 and confusion matrix from
MLflow, the champion; promote, roll back, start a retraining run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prodclass.ui import session
from prodclass.ui.views.common import label


def _versions_table(versions: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(versions)
    table["aliases"] = table["aliases"].map(", ".join)
    columns = ["version", "aliases", "family", "weighted_f1", "macro_f1", "accuracy"]
    return table[columns].set_index("version")


def _report(version: str) -> None:
    client = session.client()
    try:
        report = client.model_report(version)
    except session.ApiError as exc:
        st.info(f"No test report for version {version}: {exc}")
        return
    a, b, c = st.columns(3)
    a.metric("Weighted F1", f"{report['weighted_f1']:.3f}")
    b.metric("Macro F1", f"{report['macro_f1']:.3f}")
    c.metric("Test products", report["n"])
    per_class = pd.DataFrame(
        {
            "category": [label(int(code)) for code in report["per_class"]],
            "f1": [row["f1"] for row in report["per_class"].values()],
        }
    )
    st.bar_chart(per_class, x="category", y="f1", horizontal=True, sort="-f1", height=620)
    matrix = session.call(client.confusion_matrix, version)
    if matrix:
        st.image(matrix, caption=f"Confusion matrix of version {version} (test split)")


def _retraining() -> None:
    st.subheader("Retraining")
    client = session.client()
    if st.button("Start a retraining run"):
        run = session.call(client.start_retraining)
        if run:
            st.success(f"retraining run {run['id']} started")
    latest = session.call(client.latest_retraining)
    if latest:
        st.write(f"Latest run {latest['id']}: **{latest['state']}** (`{latest['command']}`)")
        if latest["log_tail"]:
            st.code(latest["log_tail"], language=None)


def render() -> None:
    st.header("Models")
    client = session.client()
    versions = session.call(client.models)
    current = session.call(client.current_model)
    if versions is None or current is None:
        return
    serving = current.get("serving") or {}
    st.write(f"Serving: version **{serving.get('version', '-')}** ({serving.get('family', '-')})")
    last = current.get("last_load") or {}
    if last.get("state") == "failed":
        st.warning(f"The last load ({last['uri']}) was refused: {last['error']}")
    if not versions:
        st.info("No registered model yet: run the pipeline (`make demo`).")
        _retraining()
        return
    st.dataframe(_versions_table(versions), use_container_width=True)
    champion = next((v["version"] for v in versions if "champion" in v["aliases"]), None)
    version = st.selectbox("Version", [v["version"] for v in versions])
    promote, rollback = st.columns(2)
    if promote.button(f"Promote version {version} to champion", disabled=version == champion):
        answer = session.call(client.promote, version)
        if answer:
            st.success(f"version {answer['champion']} is champion; loading it")
    if rollback.button("Roll back to the previous champion"):
        answer = session.call(client.rollback)
        if answer:
            st.success(f"champion is version {answer['champion']} again; loading it")
    _report(version)
    _retraining()
