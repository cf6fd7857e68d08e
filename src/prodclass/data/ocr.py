"""Text printed on product photos, read with Tesseract (French + English), cached by content.

Why: the photo of a book, a video game or a boxed toy often prints its title, brand or platform
("PlayStation 2", "Harry Potter"): words that separate classes that look alike as pictures.
For products that have no text at all, it is the only text there is.

Tesseract runs as a subprocess (Debian's ``tesseract-ocr`` + ``tesseract-ocr-fra``); a photo
takes 0.1-0.4 s on one core, so results are cached on disk by the photo's sha256, the
Tesseract version and the options (languages, page segmentation): each photo is read once,
whoever asks. The cache is kept under a size cap (``PRODCLASS_OCR_CACHE_MAX_MB``,
``cache_budget.py``), the least recently used photos' words going first.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prodclass.cache_budget import CacheBudget, CacheStats
from prodclass.data.text import clean_text
from prodclass.files import atomic_write

log = logging.getLogger(__name__)

# Bump when the post-processing of Tesseract's output changes (part of every cache key).
OCR_CODE_VERSION = 1
# Sparse-text page segmentation: product photos have scattered words, not paragraphs.
DEFAULT_PSM = 11
# A token worth keeping: 3+ letters or a digit-letter mix ("ps4", "x240"); Tesseract's reading
# of textures is mostly 1-2 character debris and punctuation.
_TOKEN = re.compile(r"\w{3,}", re.UNICODE)
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
TIMEOUT_SECONDS = 30


class OcrUnavailableError(RuntimeError):
    """Tesseract (or its French data) is not installed."""


@dataclass(frozen=True)
class OcrConfig:
    languages: str = "fra+eng"
    psm: int = DEFAULT_PSM
    max_chars: int = 400  # enough for a title and a brand; keeps noisy photos bounded


@functools.lru_cache(maxsize=1)
def tesseract_version() -> str:
    """The installed Tesseract version line; a clear error if it is missing."""
    exe = shutil.which("tesseract")
    if exe is None:
        raise OcrUnavailableError(
            "tesseract is not installed: `apt-get install tesseract-ocr tesseract-ocr-fra` "
            "(make install does it), or train with the family parameter ocr: false"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


@functools.lru_cache(maxsize=1)
def installed_languages() -> frozenset[str]:
    """The languages Tesseract has data for, asked once per process (every photo prediction
    checks them: a process per call would cost more than the cached OCR)."""
    tesseract_version()
    listed = subprocess.run(
        ["tesseract", "--list-langs"], capture_output=True, text=True, check=False
    )
    return frozenset(listed.stdout.split())


def check_languages(languages: str) -> None:
    """Refuse to run when a language's data is missing (Tesseract would only warn)."""
    have = installed_languages()
    missing = [lang for lang in languages.split("+") if lang not in have]
    if missing:
        raise OcrUnavailableError(
            f"tesseract has no data for {', '.join(missing)}: "
            f"`apt-get install {' '.join('tesseract-ocr-' + m for m in missing)}`"
        )


def keep_words(raw: str, max_chars: int) -> str:
    """Cleaned, lowercased words of Tesseract's output, without its usual debris."""
    words = [w for w in _TOKEN.findall(clean_text(raw)) if _LETTER.search(w)]
    return " ".join(words)[:max_chars].strip()


def run_tesseract(path: str | Path, config: OcrConfig) -> str:
    """Raw text Tesseract reads on one photo ('' if it reads nothing or fails on the file)."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one core per photo; we parallelise photos
    try:
        done = subprocess.run(
            ["tesseract", str(path), "stdout", "-l", config.languages, "--psm", str(config.psm)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.warning("OCR timed out on %s: treated as no text", path)
        return ""
    if done.returncode != 0:
        log.warning("OCR failed on %s: %s", path, done.stderr.strip()[:200])
        return ""
    return done.stdout


class OcrCache:
    """One text file per (photo sha256, OCR version): ``root/<version>/<sha[:2]>/<sha>.txt``,
    under a cap of ``max_bytes`` (None: none) that evicts the least recently used entries."""

    def __init__(self, root: Path | str, config: OcrConfig, max_bytes: int | None = None) -> None:
        self.config = config
        version = f"{tesseract_version()}|{config}|code{OCR_CODE_VERSION}"
        self.dir = Path(root) / hashlib.sha256(version.encode()).hexdigest()[:16]
        self.budget = CacheBudget.of(root, max_bytes, "ocr")
        self.hits = 0
        self.misses = 0

    def path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.txt"

    def read(self, photo: str | Path) -> str:
        """Words on ``photo``, from the cache or from Tesseract (then cached)."""
        sha = hashlib.sha256(Path(photo).read_bytes()).hexdigest()
        entry = self.path(sha)
        try:
            with open(entry, "rb") as f:  # whole or not at all, even if evicted meanwhile
                mtime = os.fstat(f.fileno()).st_mtime
                words = f.read().decode("utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        else:
            self.hits += 1
            self.budget.hit(entry, mtime)
            return words
        self.misses += 1
        self.budget.miss()
        words = keep_words(run_tesseract(photo, self.config), self.config.max_chars)
        atomic_write(entry, lambda f: f.write(words.encode("utf-8")))
        self.budget.wrote(entry)
        return words

    def stats(self) -> CacheStats:
        """Hits and misses of this object (process-wide: ``cache_budget.counts("ocr")``)."""
        return CacheStats(self.hits, self.misses)


def read_photos(
    paths: Sequence[str],
    cache_root: Path,
    config: OcrConfig = OcrConfig(),
    workers: int = 2,
    max_bytes: int | None = None,
) -> list[str]:
    """Words printed on each photo ('' for an empty path, an unreadable file or no text); the
    cache in ``cache_root`` kept under ``max_bytes`` (None: no cap)."""
    check_languages(config.languages)
    cache = OcrCache(cache_root, config, max_bytes)

    def one(path: str) -> str:
        if not path:
            return ""
        try:
            return cache.read(path)
        except OSError as exc:
            log.warning("OCR cannot read %s (%s): treated as no text", path, exc.strerror)
            return ""

    todo = [p for p in paths if p]
    if len(todo) > 50:
        log.info("reading text on %d photos (cached after the first time)", len(todo))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        out = list(pool.map(one, paths))
    log.debug("OCR cache: %d hits, %d misses", cache.hits, cache.misses)
    return out
