"""A size cap for an on-disk cache folder: least-recently-used entries are deleted in batches.

Why: the feature and OCR caches gain an entry with every new photo a replica sees; without a
cap they would fill the pod's volume. Both lay their entries out the same way,
``root/<version>/<shard>/<entry>``, and write them atomically (``files.atomic_write``), so one
small policy serves both.

Recency is the entry's modification time: a write sets it, a hit touches it (at most once per
``TOUCH_SECONDS``, so reads stay nearly free). There is no index to keep consistent: any
process may evict, and a crash loses nothing.

Cost: each process keeps an estimate of the folder's size per folder (a scan at its first
write, then plus what it writes). When the estimate passes the cap, it scans the folder and,
holding the folder's lock, deletes the oldest entries down to ``LOW_WATER`` of the cap: one
scan per tenth of the cap written, not one per write. Several processes writing one folder
each count only their own writes between scans, so the folder can pass the cap by up to a
tenth of it per other writer until that writer's next scan.

Safety: an entry is deleted whole (``os.unlink``): a reader that has it open still reads all of
it, a reader that comes after finds nothing and recomputes. Temporary files of writes in
progress (names starting with ".") are never evicted; those left by a killed writer are removed
once they are an hour old.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOW_WATER = 0.9  # an eviction leaves the folder at this share of its cap
TOUCH_SECONDS = 60.0  # a hit refreshes an entry's time only when it is older than this
STALE_TEMPORARY_SECONDS = 3600.0  # a write's temporary file older than this was abandoned
MIN_ENTRY_BYTES = 4096  # a file takes at least one block on common file systems
LOCK_FILE = ".evict.lock"
MIB = 1024 * 1024


def megabytes(mb: int) -> int | None:
    """A cap given in MiB (as the settings give it) in bytes; 0 means no cap (None)."""
    return mb * MIB if mb > 0 else None


def entry_bytes(st: os.stat_result) -> int:
    """What an entry costs on disk: its allocated blocks, at least its size and one block."""
    return max(st.st_size, getattr(st, "st_blocks", 0) * 512, MIN_ENTRY_BYTES)


@dataclass(frozen=True)
class CacheStats:
    """Lookups answered from the cache and lookups that had to compute."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass
class CacheCounts:
    """What every cache of one kind ("feature", "ocr") did in this process since it started
    (monotonic, for Prometheus counters); ``bytes`` is the folders' size as this process last
    measured them plus what it wrote since, None before its first write under a cap."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0  # entries deleted
    evicted_bytes: int = 0
    bytes: int | None = None


_counts: dict[str, CacheCounts] = {}
_budgets: dict[tuple[str, int | None], CacheBudget] = {}
_registry_lock = threading.Lock()


def counts(kind: str) -> CacheCounts:
    """A copy of this process's counts for caches of ``kind``."""
    with _registry_lock:
        mine = _counts.get(kind, CacheCounts())
        sizes = [b._estimate for b in _budgets.values() if b.kind == kind]
        known = [s for s in sizes if s is not None]
        return CacheCounts(
            mine.hits,
            mine.misses,
            mine.evictions,
            mine.evicted_bytes,
            sum(known) if known else None,
        )


def _count(kind: str, **increments: int) -> None:
    with _registry_lock:
        current = _counts.setdefault(kind, CacheCounts())
        for name, value in increments.items():
            setattr(current, name, getattr(current, name) + value)


class CacheBudget:
    """The cap of one cache folder as this process enforces it; one object per folder and cap
    (``of``), shared by every cache object and thread of the process that uses the folder."""

    def __init__(self, root: Path, max_bytes: int | None, kind: str) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"a cache cap is a positive number of bytes or None: {max_bytes}")
        self.root = root
        self.max_bytes = max_bytes
        self.kind = kind
        self._estimate: int | None = None  # None: not measured yet
        self._lock = threading.Lock()  # guards _estimate
        self._evicting = threading.Lock()  # one evicting thread per process and folder

    @classmethod
    def of(cls, root: Path | str, max_bytes: int | None, kind: str) -> CacheBudget:
        """The process's budget of folder ``root`` under ``max_bytes`` (None: no cap)."""
        key = (os.path.abspath(root), max_bytes)
        with _registry_lock:
            budget = _budgets.get(key)
            if budget is None:
                budget = _budgets[key] = cls(Path(key[0]), max_bytes, kind)
            return budget

    # ---- what caches tell it ----------------------------------------------------------------
    def hit(self, path: Path, mtime: float) -> None:
        """An entry was read: count it, and mark it recently used unless it was lately."""
        _count(self.kind, hits=1)
        if time.time() - mtime > TOUCH_SECONDS:
            # evicted meanwhile, or a read-only folder: only recency is lost
            with contextlib.suppress(OSError):
                os.utime(path)

    def miss(self) -> None:
        _count(self.kind, misses=1)

    def wrote(self, path: Path) -> None:
        """An entry was written: add it to the estimate, and evict when over the cap."""
        if self.max_bytes is None:
            return
        try:
            size = entry_bytes(os.stat(path))
        except FileNotFoundError:  # evicted by another process already
            return
        with self._lock:
            first = self._estimate is None
            if self._estimate is not None:
                self._estimate += size
            over = first or (self._estimate or 0) > self.max_bytes
        if over:
            self.enforce(only_if_over_cap=first)

    # ---- eviction ---------------------------------------------------------------------------
    def enforce(self, only_if_over_cap: bool = False) -> None:
        """Measure the folder and delete its least-recently-used entries down to LOW_WATER of
        the cap (with ``only_if_over_cap``, only when it is over the cap: a first measure).
        Returns at once when another thread or process is evicting this folder."""
        if self.max_bytes is None or not self._evicting.acquire(blocking=False):
            return
        try:
            with self._lock:
                before = self._estimate or 0
            entries = list(self._entries())
            total = sum(size for _, size, _ in entries)
            target = int(self.max_bytes * LOW_WATER)
            if total > (self.max_bytes if only_if_over_cap else target):
                with self._folder_lock() as locked:
                    if not locked:  # another process is evicting: measure again later
                        return
                    # a process that evicted since the scan took the same oldest entries:
                    # they are gone already, and counted as freed without deleting more
                    total = self._delete_oldest(sorted(entries), total, target)
            with self._lock:  # keep what other threads wrote during the scan
                self._estimate = total + max(0, (self._estimate or 0) - before)
        finally:
            self._evicting.release()

    def _delete_oldest(self, entries: list[tuple[float, int, str]], total: int, target: int) -> int:
        deleted = freed = 0
        for _, size, path in entries:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):  # another process got it first
                os.unlink(path)
                deleted += 1
                freed += size
            total -= size
        _count(self.kind, evictions=deleted, evicted_bytes=freed)
        log.info(
            "%s cache %s: evicted %d least recently used entries (%.1f MB), %.1f MB left",
            self.kind, self.root, deleted, freed / MIB, total / MIB,
        )  # fmt: skip
        return total

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[bool]:
        """The folder's eviction lock across processes (flock on a file in it: a lock on the
        folder itself would not work on network file systems), without waiting for it."""
        try:
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # no folder, nothing to evict
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def _entries(self) -> Iterator[tuple[float, int, str]]:
        """(mtime, bytes, path) of every entry; removes abandoned temporary files."""
        now = time.time()
        for version in _subfolders(self.root):
            for shard in _subfolders(version):
                for entry in _scan(shard):
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if entry.name.startswith("."):
                        if now - st.st_mtime > STALE_TEMPORARY_SECONDS:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(entry.path)
                        continue
                    yield st.st_mtime, entry_bytes(st), entry.path


def folder_bytes(root: Path | str) -> int:
    """What the entries of a cache folder take, as the cap counts them."""
    return sum(size for _, size, _ in CacheBudget(Path(root), None, "")._entries())


def _scan(folder: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _subfolders(folder: str | Path) -> Iterator[str]:
    for entry in _scan(folder):
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            yield entry.path
