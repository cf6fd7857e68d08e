"""Tesseract on real sample photos: the language check runs once per process, not once per
photo read (every prediction with a photo reads it); the cache of its words keeps to its cap."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from prodclass.cache_budget import CacheStats, folder_bytes
from prodclass.data import ocr
from prodclass.data.layout import ChallengeLayout

pytestmark = pytest.mark.skipif(
    ocr.shutil.which("tesseract") is None, reason="needs tesseract (make system-deps)"
)


def test_the_language_check_runs_once_per_process(sample: Path, tmp_path: Path, monkeypatch):
    photos = sorted(ChallengeLayout(sample).image_dir().glob("*.jpg"))[:3]
    commands: list[list[str]] = []
    real_run = subprocess.run

    def recorded(command, *args, **kwargs):
        commands.append(list(command))
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recorded)
    ocr.installed_languages.cache_clear()
    for photo in photos:  # as three predictions would, each with a cold cache
        words = ocr.read_photos([str(photo)], tmp_path / "cache")
        assert isinstance(words[0], str)
    list_langs = [c for c in commands if "--list-langs" in c]
    assert len(list_langs) == 1, list_langs
    assert sum(1 for c in commands if "stdout" in c) == len(photos)  # each photo read once
    with pytest.raises(ocr.OcrUnavailableError, match="no data for xx"):
        ocr.check_languages("fra+xx")  # a missing language is still refused, from the same list
    assert len([c for c in commands if "--list-langs" in c]) == 1


def test_the_ocr_cache_stays_under_its_cap_and_keeps_the_words_read_lately(
    sample: Path, tmp_path: Path
):
    photos = sorted(ChallengeLayout(sample).image_dir().glob("*.jpg"))[:10]
    cap = 6 * 4096 + 1000  # about six entries: each takes at least a block on disk
    cache = ocr.OcrCache(tmp_path, ocr.OcrConfig(), max_bytes=cap)
    first = [cache.read(photo) for photo in photos]
    assert cache.stats() == CacheStats(hits=0, misses=10)
    entries = [p for p in tmp_path.rglob("*.txt") if not p.name.startswith(".")]
    assert 4 <= len(entries) <= 6 and folder_bytes(tmp_path) <= cap
    assert cache.read(photos[-1]) == first[-1]  # read last: kept
    assert cache.read(photos[0]) == first[0]  # read first: evicted, read again by Tesseract
    assert cache.stats() == CacheStats(hits=1, misses=11)


def test_ocr_entries_are_kept_apart_by_languages_and_options(tmp_path: Path):
    default = ocr.OcrCache(tmp_path, ocr.OcrConfig())
    assert ocr.OcrCache(tmp_path, ocr.OcrConfig(languages="eng")).dir != default.dir
    assert ocr.OcrCache(tmp_path, ocr.OcrConfig(psm=6)).dir != default.dir
    assert ocr.OcrCache(tmp_path, ocr.OcrConfig()).dir == default.dir
