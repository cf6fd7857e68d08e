"""Ingest: fingerprint a data folder so the pipeline knows when the data changed.

The snapshot (CSV hashes, photo listing) is the first DVC output: when it is unchanged, every
later stage is reused; point ``PRODCLASS_DATA_DIR`` elsewhere and the pipeline reruns. The raw
folder itself is never copied. The folder is recorded as given, never resolved: the default,
``../shared/data/rakuten_sample``, gives the same snapshot on every clone (and the committed
dvc.lock holds), where an absolute path would differ from one machine to the next.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prodclass.data.layout import IMAGE_DIRS, X_TEST, X_TRAIN, Y_TRAIN


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(data_dir: Path) -> dict[str, Any]:
    """Content hashes of the CSVs and a hash of the photo listing (names and sizes).

    Photos are fingerprinted by name and size rather than content: hashing 2.5 GB on every run
    would cost more than the stages it guards; validation decodes each photo anyway.
    """
    root = Path(data_dir).resolve()
    files = {
        name: {"sha256": _sha256(root / name), "bytes": (root / name).stat().st_size}
        for name in (X_TRAIN, Y_TRAIN, X_TEST)
        if (root / name).is_file()
    }
    images: dict[str, Any] = {}
    for subset, rel in IMAGE_DIRS.items():
        folder = root / rel
        entries = (
            sorted((p.name, p.stat().st_size) for p in folder.glob("*.jpg"))
            if folder.is_dir()
            else []
        )
        listing = "\n".join(f"{name}\t{size}" for name, size in entries).encode()
        images[subset] = {
            "count": len(entries),
            "listing_sha256": hashlib.sha256(listing).hexdigest(),
        }
    return {"data_dir": str(data_dir), "files": files, "images": images}


def write_snapshot(data_dir: Path, out: Path) -> dict[str, Any]:
    snap = snapshot(data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(snap, indent=2) + "\n")
    return snap
