"""Prepare: validated products + cleaned text + split manifest, written to a folder.

The prepared folder is what training and evaluation read (and what DVC versions):
``products.csv`` (one row per accepted product, with its split) and ``meta.json``. Where the
photos are is written as given: a data folder given as a relative path (the default) is
recorded relative to the prepared folder, an absolute one as is; so the folder DVC hashes
holds no machine path when the data is given relative, and reads back from any clone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prodclass.data.layout import IMAGE_DIRS
from prodclass.data.split import SPLITS, hashed_split
from prodclass.data.validate import ValidatedData

log = logging.getLogger(__name__)

PRODUCTS_FILE = "products.csv"
META_FILE = "meta.json"
MANIFEST_COLUMNS = [
    "productid", "imageid", "label", "modality", "split", "text", "title", "image"
]  # fmt: skip


@dataclass(frozen=True)
class SplitParams:
    val_size: float = 0.15
    test_size: float = 0.15
    seed: int = 42


def prepare(
    validated: ValidatedData,
    out_dir: Path,
    params: SplitParams,
    extra_train: ValidatedData | None = None,
) -> dict[str, object]:
    """Write the prepared folder; return its metadata (counts per split and modality).

    ``extra_train`` (reviewers' labelled feedback) joins the train split only: validation and
    test stay exactly the split of the main data (what a held-out evaluation reads). A
    reviewed product that is also a validation or test product of the main data is left out
    (it would leak those splits into training). Training and tuning cross-validate on every
    row, whatever its split.
    """
    products = validated.products.copy()
    products["split"] = hashed_split(products, params.val_size, params.test_size, params.seed)
    products["image"] = [Path(p).name if p else "" for p in products["image_path"]]
    n_extra = 0
    if extra_train is not None and len(extra_train.products):
        extra = extra_train.products.copy()
        held_out = set(products.loc[products["split"] != "train", "productid"])
        extra = extra[~extra["productid"].isin(held_out)]
        extra.index = [f"feedback-{i}" for i in extra.index]
        extra["split"] = "train"
        photos = _portable(Path(extra_train.report.data_dir), out_dir)
        extra["image"] = [
            str(photos / IMAGE_DIRS[extra_train.report.subset] / Path(p).name) if p else ""
            for p in extra["image_path"]
        ]
        products = pd.concat([products, extra])
        n_extra = len(extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = products[MANIFEST_COLUMNS]
    manifest.to_csv(out_dir / PRODUCTS_FILE, index=True)
    data_dir = _portable(Path(validated.report.data_dir), out_dir)
    has_photos = (validated.products["image_path"] != "").any()
    meta = {
        "data_dir": str(data_dir),
        "image_dir": str(data_dir / IMAGE_DIRS[validated.report.subset]) if has_photos else "",
        "split_params": params.__dict__,
        "n_products": len(products),
        "n_rejected": validated.report.n_rejected,
        "n_extra_train": n_extra,
        "splits": {s: int((products["split"] == s).sum()) for s in SPLITS},
        "modalities_by_split": {
            s: products.loc[products["split"] == s, "modality"].value_counts().to_dict()
            for s in SPLITS
        },
        "manifest_sha256": hashlib.sha256((out_dir / PRODUCTS_FILE).read_bytes()).hexdigest(),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("prepared %d products into %s: %s", len(products), out_dir, meta["splits"])
    return meta


def _portable(folder: Path, out_dir: Path) -> Path:
    """``folder`` as the prepared folder ``out_dir`` records it: relative to ``out_dir`` when
    given relative (to the working folder), else as is."""
    return folder if folder.is_absolute() else Path(os.path.relpath(folder, out_dir))


def load_prepared(prepared_dir: Path, split: str | None = None) -> pd.DataFrame:
    """Read a prepared folder back, with each photo's ``image_path`` ('' when there is none):
    ``image`` is a file name in meta.json's ``image_dir``, or (reviewed products) a path; the
    relative ones are relative to the prepared folder."""
    meta = json.loads((prepared_dir / META_FILE).read_text())
    products = pd.read_csv(
        prepared_dir / PRODUCTS_FILE,
        index_col=0,
        dtype={"productid": str, "imageid": str},
        keep_default_na=False,
    )
    products.index = products.index.astype(str)
    products["text"] = products["text"].astype(str)
    # the cleaned title apart (some text features weigh it on its own); '' in older folders
    products["title"] = products["title"].astype(str) if "title" in products else ""
    image_dir = Path(prepared_dir) / meta["image_dir"]  # as is when absolute
    products["image_path"] = [
        os.path.normpath(Path(prepared_dir) / name if "/" in name else image_dir / name)
        if name
        else ""
        for name in products["image"]
    ]
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        products = products[products["split"] == split]
    return products
