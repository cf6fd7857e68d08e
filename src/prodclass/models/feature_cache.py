"""Disk cache of frozen-trunk activations, and the function that fills and reads it.

Why: the frozen trunk (``image_effnet.EffNetTrunk``) is most of the cost of a forward pass, and
its output only depends on the photo's bytes, the view (e.g. mirrored) and the encoder. Keyed
by exactly those three, an entry can be reused across epochs, runs, retrains and data
snapshots; the photo's content hash (not its path) means a renamed or copied photo still hits.

Layout: ``root/<sha256(encoder_version)[:16]>/<sha[:2]>/<sha>-<view>.npy``, float16 (C, h, w),
about 19 KB per photo and view for lite0. A new encoder version simply starts a new folder
(``encoder.txt`` in each says which version it holds). The folder is kept under a size cap
(``PRODCLASS_FEATURE_CACHE_MAX_MB``, ``cache_budget.py``): the least recently used entries go
first, so an old encoder version's entries, which nothing reads any more, are the first to go.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from prodclass.cache_budget import LOW_WATER, MIB, CacheBudget, CacheStats, megabytes
from prodclass.data.images import ImageError, open_image
from prodclass.files import atomic_write
from prodclass.models.image_effnet import (
    VIEWS,
    EffNetConfig,
    EffNetTrunk,
    encoder_version,
    image_to_tensor,
)

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_VIEW = re.compile(r"[A-Za-z0-9_]+")  # goes into a file name


@dataclass(frozen=True)
class CacheKey:
    image_sha256: str  # of the photo file's bytes
    view: str  # "orig", "hflip", ...
    encoder_version: str  # image_effnet.encoder_version(config)

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.image_sha256):
            raise ValueError(f"not a sha256 hex digest: {self.image_sha256!r}")
        if not _VIEW.fullmatch(self.view):
            raise ValueError(f"view names are letters, digits and _: {self.view!r}")


class FeatureCache:
    """Trunk activations on disk, one float16 .npy per (photo, view, encoder version).

    Writes are atomic (temporary file in the same folder, then ``os.replace``), so concurrent
    writers and interrupted runs never leave a half-written entry behind; an unreadable entry
    is treated as a miss and overwritten. Under a cap (``max_bytes``), a write that takes the
    folder over it evicts the least recently used entries; an entry evicted while another
    thread or process reads it is read whole or not at all (then a miss: recomputed).
    """

    def __init__(self, root: Path | str, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.budget = CacheBudget.of(self.root, max_bytes, "feature")
        self.hits = 0
        self.misses = 0
        self._described: set[str] = set()  # version folders whose encoder.txt we wrote

    @classmethod
    def at(cls, root: Path | str) -> FeatureCache:
        """The cache in ``root`` under the settings' cap (PRODCLASS_FEATURE_CACHE_MAX_MB)."""
        from prodclass.settings import get_settings

        return cls(root, megabytes(get_settings().feature_cache_max_mb))

    @classmethod
    def default(cls) -> FeatureCache:
        """The cache every model shares, under the state folder of the settings."""
        from prodclass.settings import get_settings

        return cls.at(get_settings().state_dir / "feature-cache")

    def version_dir(self, encoder_version: str) -> Path:
        return self.root / hashlib.sha256(encoder_version.encode()).hexdigest()[:16]

    def path(self, key: CacheKey) -> Path:
        sha = key.image_sha256
        return self.version_dir(key.encoder_version) / sha[:2] / f"{sha}-{key.view}.npy"

    def get(self, key: CacheKey) -> np.ndarray | None:
        path = self.path(key)
        try:
            with open(path, "rb") as f:  # open once: an eviction now cannot cut the read short
                mtime = os.fstat(f.fileno()).st_mtime
                array = np.load(f, allow_pickle=False)
        except FileNotFoundError:
            self._missed()
            return None
        except (OSError, ValueError, EOFError) as exc:
            log.warning("unreadable cache entry %s (%s): recomputing it", path, exc)
            self._missed()
            return None
        self.hits += 1
        self.budget.hit(path, mtime)
        return array

    def put(self, key: CacheKey, array: np.ndarray) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._describe(key.encoder_version)
        atomic_write(path, lambda f: np.save(f, np.asarray(array, dtype=np.float16)))
        self.budget.wrote(path)

    def stats(self) -> CacheStats:
        """Hits and misses of this object since it was made or its counters were reset (the
        process-wide counts, for metrics: ``cache_budget.counts("feature")``)."""
        return CacheStats(self.hits, self.misses)

    def _missed(self) -> None:
        self.misses += 1
        self.budget.miss()

    def reset_counters(self) -> None:
        self.hits = self.misses = 0

    def _describe(self, version: str) -> None:
        """Write the full encoder version next to the entries, for whoever cleans up."""
        if version in self._described:
            return
        note = self.version_dir(version) / "encoder.txt"
        if not note.exists():
            atomic_write(note, lambda f: f.write(f"{version}\n".encode()))
        self._described.add(version)


# -----------------------------------------------------------------------------------------
# filling the cache


def _read_photo(path: str | Path) -> bytes:
    if not str(path):
        raise ValueError("empty image path: pass only products that have a photo")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc.strerror}") from exc


def _decode_photo(path: str | Path, data: bytes) -> Image.Image:
    try:
        return open_image(data)
    except ImageError as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from exc


def trunk_activations(
    paths: Sequence[str | Path],
    trunk: EffNetTrunk,
    cache: FeatureCache | None,
    config: EffNetConfig,
    views: Sequence[str] = ("orig",),
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """(N, V, C, h, w) float16 trunk activations of N photos under V views, e.g. (N, 2, 192,
    7, 7) for lite0 with views ("orig", "hflip"), all in memory.

    Each file is read once; its bytes serve both the content hash (cache key) and decoding,
    and photos whose every view is cached are not decoded at all. Misses run through the
    trunk in batches of ``batch_size`` and are written to the cache. An empty path, a missing
    file or an undecodable image raises ValueError naming the path. For more photos than fit
    in memory, ``cache_activations`` fills the cache and streams them instead.
    """
    out = np.empty((len(paths), len(views), *trunk.out_shape), dtype=np.float16)
    _fill(paths, trunk, cache, config, views, batch_size, progress, out)
    return out


def cache_activations(
    paths: Sequence[str | Path],
    trunk: EffNetTrunk,
    cache: FeatureCache,
    config: EffNetConfig,
    views: Sequence[str] = ("orig",),
    batch_size: int = 32,
    progress: bool = True,
) -> ActivationStore:
    """Make sure the cache holds every photo's activations under every view, and return them
    as an ``ActivationStore``: read from disk batch by batch, never all in memory (about 19 KB
    per photo and view for lite0, i.e. 3.2 GB for the 84,916-product catalogue and two views).
    Same errors as ``trunk_activations``; memory stays one trunk batch whatever N. Entries
    evicted while the store is read (the cache's cap is below what these photos take) are
    recomputed from the photos, at the trunk's cost each time."""
    needed = len(paths) * len(views) * (int(np.prod(trunk.out_shape)) * 2 + 128)  # float16
    cap = cache.budget.max_bytes
    if cap is not None and needed > LOW_WATER * cap:
        log.warning(
            "these photos' activations take about %d MB, over the feature cache's cap of %d MB: "
            "entries will be evicted and recomputed while they are read; raise "
            "PRODCLASS_FEATURE_CACHE_MAX_MB (0: no cap) on machines that train",
            needed // MIB, cap // MIB,
        )  # fmt: skip
    shas = _fill(paths, trunk, cache, config, views, batch_size, progress, None)
    return ActivationStore(
        cache, shas, tuple(views), encoder_version(config), trunk.out_shape, (paths, trunk)
    )


class ActivationStore:
    """Cached trunk activations of N photos under V views, loaded only when asked for.

    Holds the photos' content hashes, not their activations: ``take`` reads the rows of one
    training batch, ``chunks`` walks all photos a slice at a time (pooled features). The
    entries are the cache's own files, so a store built in one process reads what another one
    (or another machine sharing the folder) computed. Given the photos and the trunk
    (``source``), an entry evicted meanwhile is computed again; without them it is an error.
    """

    def __init__(
        self,
        cache: FeatureCache,
        shas: Sequence[str],
        views: tuple[str, ...],
        encoder_version: str,
        shape: tuple[int, ...],
        source: tuple[Sequence[str | Path], EffNetTrunk] | None = None,
    ) -> None:
        self.cache = cache
        self.shas = list(shas)
        self.views = views
        self.encoder_version = encoder_version
        self.shape = shape  # (C, h, w) of one activation
        self.source = source

    def __len__(self) -> int:
        return len(self.shas)

    def _read(self, row: int, view: int) -> np.ndarray:
        key = CacheKey(self.shas[row], self.views[view], self.encoder_version)
        array = self.cache.get(key)
        if array is None or array.shape != self.shape:
            return self._recompute(row, key)
        return array

    def _recompute(self, row: int, key: CacheKey) -> np.ndarray:
        """(C, h, w) activation of an entry gone from the cache, from its photo again."""
        if self.source is None:
            raise RuntimeError(
                f"feature cache entry {self.cache.path(key)} vanished or changed while in use: "
                "run again to recompute it"
            )
        paths, trunk = self.source
        path = paths[row]
        data = _read_photo(path)
        if hashlib.sha256(data).hexdigest() != key.image_sha256:
            raise RuntimeError(f"photo {path} changed while its activations were in use")
        x = VIEWS[key.view](image_to_tensor(_decode_photo(path, data), trunk.config.image_size))
        with torch.inference_mode():
            act = trunk(x[None].to(next(trunk.parameters()).device))  # (1, C, h, w)
        array = act[0].to(torch.float16).cpu().numpy()
        self.cache.put(key, array)
        return array

    def take(self, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
        """(len(rows), C, h, w) float16: photo ``rows[i]`` under view index ``views[i]``."""
        out = np.empty((len(rows), *self.shape), dtype=np.float16)
        for i, (row, view) in enumerate(zip(rows, views)):
            out[i] = self._read(int(row), int(view))
        return out

    def chunks(self, size: int = 128) -> Iterator[np.ndarray]:
        """Consecutive (n <= size, V, C, h, w) float16 slices of all photos, in row order."""
        for start in range(0, len(self), size):
            rows = range(start, min(start + size, len(self)))
            out = np.empty((len(rows), len(self.views), *self.shape), dtype=np.float16)
            for i, row in enumerate(rows):
                for v in range(len(self.views)):
                    out[i, v] = self._read(row, v)
            yield out


def _fill(
    paths: Sequence[str | Path],
    trunk: EffNetTrunk,
    cache: FeatureCache | None,
    config: EffNetConfig,
    views: Sequence[str],
    batch_size: int,
    progress: bool,
    out: np.ndarray | None,
) -> list[str]:
    """Run the trunk over the photos the cache misses; put every activation in ``out`` when it
    is given (else only check the cached ones are usable). Returns the photos' sha256."""
    if trunk.config != config:
        raise ValueError(f"trunk was built for {trunk.config}, not {config}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown views {unknown}; known: {sorted(VIEWS)}")
    if cache is None and out is None:
        raise ValueError("without a cache, activations must be kept in memory")
    version = encoder_version(config) if cache is not None else ""
    device = next(trunk.parameters()).device
    shas: list[str] = []

    # photos (one tensor per missing view) waiting for a trunk batch
    pending: list[tuple[int, int, CacheKey | None, torch.Tensor]] = []  # row, view, key, x

    def run(batch: list[tuple[int, int, CacheKey | None, torch.Tensor]]) -> None:
        x = torch.stack([item[3] for item in batch]).to(device)  # (b, 3, H, W)
        with torch.inference_mode():
            acts = trunk(x).to(torch.float16).cpu().numpy()  # (b, C, h, w)
        for (row, v, key, _), act in zip(batch, acts):
            if out is not None:
                out[row, v] = act
            if cache is not None and key is not None:
                cache.put(key, act)

    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("image features", total=len(paths))
        for row, path in enumerate(paths):
            data = _read_photo(path)
            keys: list[CacheKey | None] = [None] * len(views)
            missing = list(range(len(views)))
            sha = hashlib.sha256(data).hexdigest()
            shas.append(sha)
            if cache is not None:
                keys = [CacheKey(sha, view, version) for view in views]
                missing = []
                for v, key in enumerate(keys):
                    cached = cache.get(key)
                    if cached is not None and cached.shape == trunk.out_shape:
                        if out is not None:
                            out[row, v] = cached
                    else:
                        missing.append(v)
            if missing:
                x = image_to_tensor(_decode_photo(path, data), config.image_size)  # (3, H, W)
                for v in missing:
                    pending.append((row, v, keys[v], VIEWS[views[v]](x)))
                while len(pending) >= batch_size:
                    run(pending[:batch_size])
                    del pending[:batch_size]
            bar.advance(task)
        if pending:
            run(pending)
    if cache is not None:
        log.debug("feature cache: %d hits, %d misses so far", cache.hits, cache.misses)
    return shas
