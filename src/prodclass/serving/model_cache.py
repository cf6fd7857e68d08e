"""A local copy of the last model the API served, so a restart while the model registry is
unreachable still serves.

Without it, an API restarted during an MLflow outage (a node drained, a crash) has nothing to
serve until MLflow is back, although it served a good model seconds before. After every
successful load (loaded and smoke-tested) the model folder is copied under
``state_dir/model-cache/<key>/`` and ``last.json`` names it (URI, version, family, time). At
start, when the registry does not answer, the slot loads that copy instead (same smoke test),
says so (``source: cache``), and the watcher loads from the registry once it answers again.

Copies are written to a temporary folder and renamed, the pointer replaced atomically, so
processes sharing a state dir never read half a copy. Only the newest copy and the one it
replaced are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POINTER = "last.json"


@dataclass(frozen=True)
class CachedModel:
    uri: str  # what was loaded (e.g. models:/prodclass@champion)
    version: str | None
    family: str
    folder: Path
    saved_at: float


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def last(self) -> CachedModel | None:
        """The copy of the last model served, or None (never served, or the copy is gone)."""
        try:
            data = json.loads((self.root / POINTER).read_text(encoding="utf-8"))
            cached = CachedModel(**{**data, "folder": self.root / data["folder"]})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return cached if cached.folder.is_dir() else None

    def save(self, uri: str, version: str | None, family: str, model_dir: Path) -> CachedModel:
        """Copy ``model_dir`` (a loaded, smoke-tested model folder) and point ``last.json`` at it.

        A registered version never changes, so its copy is made once; other URIs (folders,
        runs) are copied each time under a new name."""
        if version is not None:
            key = f"v{version}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"
        else:
            key = f"u{time.time_ns()}"
        target = self.root / key
        if not target.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            shutil.copytree(model_dir, tmp)
            try:
                tmp.rename(target)
            except OSError:  # another process saved the same version meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
        previous = self.last()
        cached = CachedModel(uri, version, family, target, time.time())
        pointer = self.root / f".{POINTER}.{uuid.uuid4().hex}"
        pointer.write_text(json.dumps({**asdict(cached), "folder": key}), encoding="utf-8")
        os.replace(pointer, self.root / POINTER)
        keep = {key, previous.folder.name if previous else key}
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name not in keep and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
        return cached


def registry_problem(tracking_uri: str, timeout: float = 5.0) -> str | None:
    """Why the MLflow tracking server cannot be reached now, or None when it answers.

    One quick ``/health`` call, without MLflow's own retries (minutes by default), so a start
    during an outage falls back to the cached copy at once. Local stores (SQLite, files) are
    on this machine: nothing to wait for."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (http(s) only)
            if answer.status == 200:
                return None
            return f"{url} answered {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url} unreachable: {getattr(exc, 'reason', exc)}"
