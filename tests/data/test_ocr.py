"""Tesseract on real sample photos: the language check runs once per process, not once per
photo read (every prediction with a photo reads it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
