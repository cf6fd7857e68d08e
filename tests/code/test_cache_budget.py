"""The size cap of the on-disk caches, on real files in real cache folders: the cap holds,
the least recently used entries go first, encoder versions never share an entry, and threads
writing, reading and evicting one folder side by side never crash or read part of an entry."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from prodclass import cache_budget
from prodclass.cache_budget import STALE_TEMPORARY_SECONDS, counts, folder_bytes
from prodclass.models.feature_cache import CacheKey, FeatureCache

SHAPE = (192, 7, 7)  # Lite0's trunk output: 18,944 bytes as float16 .npy, 20,480 on disk
V1 = "efficientnet-lite0/size224/trainable0/weights-aaaa/code1"
V2 = "efficientnet-lite0/size224/trainable0/weights-bbbb/code1"


def key(i: int, version: str = V1) -> CacheKey:
    return CacheKey(f"{i:064x}", "orig", version)


def activation(i: int) -> np.ndarray:
    """An entry whose every value says which photo it belongs to (a torn read would show)."""
    return np.full(SHAPE, i % 2000, dtype=np.float16)


def entry_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.npy") if not p.name.startswith(".")]


def disk_usage(root: Path) -> int:
    """Bytes the entries take, measured apart from the module under test."""
    return sum(max(p.stat().st_size, p.stat().st_blocks * 512) for p in entry_files(root))


def test_the_cap_holds_after_writing_far_more_than_it_holds(tmp_path):
    cap = 200_000  # about 9 entries
    cache = FeatureCache(tmp_path, max_bytes=cap)
    before = counts("feature").evictions
    for i in range(60):
        cache.put(key(i), activation(i))
        assert disk_usage(tmp_path) <= cap, f"over the cap after entry {i}"
        assert folder_bytes(tmp_path) <= cap
    left = entry_files(tmp_path)
    # evicted in batches down to 90 % of the cap, never emptied
    assert 0.9 * cap - 30_000 <= disk_usage(tmp_path) <= cap
    assert 5 <= len(left) <= 9
    assert counts("feature").evictions - before == 60 - len(left)
    np.testing.assert_array_equal(cache.get(key(59)), activation(59))  # the newest stays
    assert cache.get(key(0)) is None  # the oldest went


def test_the_least_recently_used_entries_go_first(tmp_path):
    cache = FeatureCache(tmp_path, max_bytes=200_000)
    for i in range(8):
        cache.put(key(i), activation(i))
    now = time.time()
    for i in range(8):  # written over the last hour, entry 0 first
        os.utime(cache.path(key(i)), (now - 3600 + i, now - 3600 + i))
    np.testing.assert_array_equal(cache.get(key(0)), activation(0))  # the oldest, read now
    for i in range(8, 12):
        cache.put(key(i), activation(i))
    assert cache.get(key(0)) is not None, "an entry read just now was evicted"
    assert cache.get(key(1)) is None, "the least recently used entry survived"
    assert cache.get(key(11)) is not None


def test_a_restart_under_a_lower_cap_trims_the_folder_at_its_first_write(tmp_path):
    uncapped = FeatureCache(tmp_path)
    for i in range(30):
        uncapped.put(key(i), activation(i))
    assert disk_usage(tmp_path) > 500_000  # the cap never applied
    capped = FeatureCache(tmp_path, max_bytes=200_000)
    capped.put(key(30), activation(30))
    assert disk_usage(tmp_path) <= 200_000
    assert capped.get(key(30)) is not None


def test_encoder_versions_never_share_an_entry(tmp_path):
    cache = FeatureCache(tmp_path, max_bytes=10_000_000)
    cache.put(key(7, V1), activation(1))
    assert cache.get(key(7, V2)) is None  # same photo, another encoder: a miss
    cache.put(key(7, V2), activation(2))
    assert cache.path(key(7, V1)) != cache.path(key(7, V2))
    np.testing.assert_array_equal(cache.get(key(7, V1)), activation(1))
    np.testing.assert_array_equal(cache.get(key(7, V2)), activation(2))
    # encoder.txt in each version folder names it; eviction never counts or removes it
    notes = sorted(p.read_text().strip() for p in tmp_path.glob("*/encoder.txt"))
    assert notes == sorted([V1, V2])


def test_threads_writing_reading_and_evicting_never_crash_or_read_part_of_an_entry(
    tmp_path, caplog
):
    """Two cache objects with their own budgets (as two processes would have) share a folder
    whose cap holds about five entries, so entries are deleted while others read them."""
    caplog.set_level(logging.WARNING, logger="prodclass.models.feature_cache")
    caches = [FeatureCache(tmp_path, max_bytes=110_000), FeatureCache(tmp_path, max_bytes=120_000)]
    errors: list[BaseException] = []
    seen = {"hits": 0, "misses": 0}
    stop = time.monotonic() + 4.0

    def writer(n: int) -> None:
        cache, i = caches[n % 2], n
        while time.monotonic() < stop:
            cache.put(key(i % 40), activation(i % 40))
            i += 3

    def reader(n: int) -> None:
        cache, i = caches[n % 2], n
        while time.monotonic() < stop:
            got = cache.get(key(i % 40))
            if got is None:
                seen["misses"] += 1
            else:
                assert got.shape == SHAPE and (got == i % 40).all(), "a torn or foreign entry"
                seen["hits"] += 1
            i += 1

    def guarded(target, n: int):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                target(n)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(writer, n)) for n in range(3)]
    threads += [threading.Thread(target=guarded(reader, n)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    torn = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert not torn, f"readers saw half-written entries: {torn[:3]}"
    assert seen["hits"] > 0 and seen["misses"] > 0  # reads raced with evictions both ways
    # both budgets measure again before trusting their estimates: the folder ends under the
    # larger cap once a last write through each has run
    for n, cache in enumerate(caches):
        cache.budget.enforce()
        cache.put(key(100 + n), activation(100 + n))
    assert disk_usage(tmp_path) <= 120_000
    assert not list(tmp_path.rglob("*.tmp")), "a write's temporary file was left behind"


def test_abandoned_temporary_files_are_removed_and_fresh_ones_kept(tmp_path):
    cache = FeatureCache(tmp_path, max_bytes=100_000)
    cache.put(key(1), activation(1))
    shard = cache.path(key(1)).parent
    old, fresh = shard / ".old.npy.abc.tmp", shard / ".fresh.npy.def.tmp"
    old.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"x" * 1000)
    past = time.time() - STALE_TEMPORARY_SECONDS - 60
    os.utime(old, (past, past))
    for i in range(2, 10):  # over the cap: an eviction scans the folder
        cache.put(key(i), activation(i))
    assert not old.exists() and fresh.exists()


def test_hits_and_misses_are_counted_per_cache_and_for_prometheus(tmp_path):
    import prodclass.serving.metrics  # noqa: F401 - registers the collector

    def scraped(name: str) -> float:
        value = REGISTRY.get_sample_value(name)
        assert value is not None, f"{name} is not exported"
        return value

    hits, misses = (
        scraped("prodclass_feature_cache_hits_total"),
        scraped("prodclass_feature_cache_misses_total"),
    )
    cache = FeatureCache(tmp_path, max_bytes=1_000_000)
    assert cache.get(key(1)) is None
    cache.put(key(1), activation(1))
    for _ in range(3):
        assert cache.get(key(1)) is not None
    assert cache.stats() == cache_budget.CacheStats(hits=3, misses=1)
    assert cache.stats().hit_rate == pytest.approx(0.75)
    assert scraped("prodclass_feature_cache_hits_total") - hits == 3
    assert scraped("prodclass_feature_cache_misses_total") - misses == 1
    assert scraped("prodclass_feature_cache_bytes") >= 18_944
    assert REGISTRY.get_sample_value("prodclass_ocr_cache_hits_total") is not None


def test_a_cap_of_zero_megabytes_means_none():
    assert cache_budget.megabytes(0) is None
    assert cache_budget.megabytes(5) == 5 * 1024 * 1024
    with pytest.raises(ValueError, match="positive"):
        cache_budget.CacheBudget(Path("."), 0, "feature")
