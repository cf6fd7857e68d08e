"""Download the Rakuten challenge files over HTTP and lay them out for ``--data``.

The photo archive is large and mirrors drop connections, so every transfer keeps a ``<name>.part``
file and resumes it with an HTTP ``Range`` request. Every file is sha256-checked (against the
caller's list and against a sha256 ``ETag`` when the server sends one) and recorded in
``download_manifest.json``, so a second run downloads nothing. The base URL always comes from the
caller (the CLI passes ``Settings.dataset_url``): no host is written in this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import requests
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from prodclass.data.layout import IMAGE_DIRS, X_TEST, X_TRAIN, Y_TRAIN

logger = logging.getLogger(__name__)

IMAGES_ZIP = "images_low.zip"
DEFAULT_FILES: tuple[str, ...] = (X_TRAIN, Y_TRAIN, X_TEST, IMAGES_ZIP)
MANIFEST_NAME = "download_manifest.json"
PART_SUFFIX = ".part"
MAX_RETRIES = 3
RETRY_BACKOFF = 1.0  # seconds before the first retry; doubled after each further failure
CHUNK_SIZE = 1 << 16

Timeout = float | tuple[float, float]

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SHA256SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
_BSD_LINE = re.compile(r"SHA256 \((.+)\) = ([0-9a-fA-F]{64})")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_ETAG_HEADERS = ("X-Linked-Etag", "ETag")  # Hugging Face puts the LFS sha256 in X-Linked-Etag


class DownloadError(RuntimeError):
    """A download, checksum or archive problem, worded for the person running the command."""


class _Interrupted(Exception):
    """The body ended before the announced length: worth a retry that resumes the part file."""


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks so multi-gigabyte archives fit in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise_sha(value: str, what: str) -> str:
    digest = value.strip().lower()
    if not _SHA256_RE.fullmatch(digest):
        raise DownloadError(f"Expected checksum for {what} is not a sha256 hex digest: {value!r}.")
    return digest


def read_checksums(path: Path) -> dict[str, str]:
    """Read a ``sha256sum``-format file (``<hex>  <name>``; BSD ``SHA256 (name) = hex`` too).

    Names are reduced to their last component because the data set is a flat list of files.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DownloadError(f"Cannot read checksum file {path}: {exc.strerror or exc}.") from exc
    checksums: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if match := _SHA256SUM_LINE.fullmatch(line):
            digest, name = match.group(1), match.group(2)
        elif match := _BSD_LINE.fullmatch(line):
            name, digest = match.group(1), match.group(2)
        else:
            raise DownloadError(f"Line {lineno} of {path} is not in sha256sum format: {raw!r}.")
        checksums[PurePosixPath(name.replace("\\", "/")).name] = digest.lower()
    return checksums


def _advertised_sha256(response: requests.Response) -> str | None:
    """A sha256 the server vouches for, from an ETag-like header (redirects included)."""
    for resp in (response, *reversed(response.history)):
        for header in _ETAG_HEADERS:
            value = resp.headers.get(header)
            if not value:
                continue
            value = value.strip()
            if value.startswith("W/"):
                value = value[2:]
            value = value.strip('"').lower()
            if _SHA256_RE.fullmatch(value):
                return value
    return None


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------


def _progress_bar(enabled: bool) -> Progress:
    """Rich bars on stderr, so the CLI's JSON on stdout stays machine-readable."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _timeouts(timeout: Timeout) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        return timeout
    return (float(timeout), float(timeout))


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def _content_range(response: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``Content-Range``; None where the server did not say."""
    match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _transfer(
    session: requests.Session,
    url: str,
    part: Path,
    timeout: tuple[float, float],
    progress: Progress,
    task: TaskID,
) -> str | None:
    """One GET that resumes ``part`` where it stops; returns the server's advertised sha256."""
    offset = part.stat().st_size if part.is_file() else 0
    # identity: byte ranges must address the stored bytes, not a gzip stream of them.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        advertised = _advertised_sha256(response)
        if status == 416 and offset:
            _, total = _content_range(response)
            if total is None or total == offset:
                logger.info("%s: part file already complete (%d bytes)", part.name, offset)
                progress.update(task, total=offset, completed=offset)
                return advertised
            logger.warning(
                "%s: server refused resume at %d of %d bytes; restarting", url, offset, total
            )
            part.unlink()
            return _transfer(session, url, part, timeout, progress, task)
        if status >= 400:
            reason = f" {response.reason}" if response.reason else ""
            raise DownloadError(f"Download of {url} failed with HTTP {status}{reason}.")
        if status == 206:
            start, total = _content_range(response)
            if start != offset:
                logger.warning(
                    "%s: server resumed at byte %s, not %d; restarting", url, start, offset
                )
                part.unlink()
                return _transfer(session, url, part, timeout, progress, task)
            mode = "ab"
        else:
            if offset:
                logger.info("%s: server ignored the Range request; restarting from zero", url)
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if offset:
            logger.info("%s: resuming at byte %d", url, offset)
        progress.update(task, total=total, completed=offset)
        written = offset
        with part.open(mode) as handle:
            for chunk in response.iter_content(CHUNK_SIZE):
                handle.write(chunk)
                written += len(chunk)
                progress.update(task, completed=written)
    if total is not None and written < total:
        raise _Interrupted(f"connection closed after {written} of {total} bytes")
    return advertised


def _fetch(
    session: requests.Session,
    url: str,
    dest: Path,
    expected_sha256: str | None,
    timeout: Timeout,
    progress: Progress,
) -> str:
    """Download ``url`` to ``dest`` through a part file, retrying and verifying; returns sha256."""
    expected = _normalise_sha(expected_sha256, dest.name) if expected_sha256 else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    task = progress.add_task(dest.name, total=None)
    failures = 0
    logger.info("downloading %s", url)
    while True:
        before = part.stat().st_size if part.is_file() else 0
        try:
            advertised = _transfer(session, url, part, _timeouts(timeout), progress, task)
            break
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            _Interrupted,
        ) as exc:
            # A drop after progress is a fresh start; only consecutive stalls count.
            failures = 1 if part.is_file() and part.stat().st_size > before else failures + 1
            if failures > MAX_RETRIES:
                raise DownloadError(
                    f"Could not download {url} after {MAX_RETRIES} retries: {exc}."
                ) from exc
            delay = RETRY_BACKOFF * 2 ** (failures - 1)
            logger.warning(
                "%s: transfer interrupted (%s); retry %d/%d in %.1fs",
                url,
                exc,
                failures,
                MAX_RETRIES,
                delay,
            )
            time.sleep(delay)

    digest = sha256_file(part)
    for reference, source in ((expected, "was expected"), (advertised, "is the server's ETag")):
        if reference and digest != reference:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{dest.name} from {url} has sha256 {digest} but {reference} {source}, "
                "so the file was deleted."
            )
    os.replace(part, dest)
    logger.info("%s: %d bytes, sha256 %s", dest.name, dest.stat().st_size, digest)
    return digest


def download_file(
    url: str,
    dest: Path,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: Timeout = 30.0,
) -> str:
    """Download one file resumably (``<dest>.part`` + ``Range``), verify it, return its sha256.

    ``timeout`` is seconds for connect and for each read (or a ``(connect, read)`` pair).
    """
    with requests.Session() as session, _progress_bar(progress) as bar:
        return _fetch(session, url, Path(dest), expected_sha256, timeout, bar)


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------


def file_url(base_url: str, name: str) -> str:
    """URL of one data set file; tolerant of a base URL with or without the trailing slash."""
    return f"{base_url.rstrip('/')}/{quote(name)}"


def _load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST_NAME
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
                return manifest
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s: %s", path, exc)
    return {"files": {}}


def _write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    """Write atomically, so an interrupted run never leaves a manifest that vouches for junk."""
    path = out / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _is_complete(dest: Path, entry: Mapping[str, Any] | None, expected: str | None) -> bool:
    """True when ``dest`` is the file the manifest (and the caller's checksum) describes."""
    if not dest.is_file():
        return False
    if entry is None:
        # No record (manifest lost): trust the file only if the caller's checksum vouches for it.
        return expected is not None and sha256_file(dest) == expected
    recorded = entry.get("sha256")
    if entry.get("size") != dest.stat().st_size or (expected and recorded != expected):
        return False
    return sha256_file(dest) == recorded


def _entry(name: str, dest: Path, digest: str, url: str) -> dict[str, Any]:
    return {"name": name, "size": dest.stat().st_size, "sha256": digest, "url": url}


def _check_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise DownloadError(f"Data set file names must be plain file names, got {name!r}.")


def download_dataset(
    base_url: str,
    out_dir: Path,
    files: Sequence[str] = DEFAULT_FILES,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: Timeout = 30.0,
) -> dict[str, Any]:
    """Fetch ``files`` from ``base_url`` into ``out_dir`` and unpack the photos.

    Files the manifest already vouches for are skipped, so rerunning is cheap and safe. Returns
    the manifest: ``{"base_url", "files": {name: {name, size, sha256, url}}, "extracted"}``.
    """
    if not base_url:
        raise DownloadError("No base URL to download from; set PRODCLASS_DATASET_URL or pass one.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    expected = {
        PurePosixPath(name).name: _normalise_sha(value, name)
        for name, value in (checksums or {}).items()
    }
    manifest = _load_manifest(out)
    manifest["base_url"] = base_url
    entries: dict[str, Any] = manifest["files"]
    with requests.Session() as session, _progress_bar(progress) as bar:
        for name in files:
            _check_name(name)
            dest = out / name
            url = file_url(base_url, name)
            if _is_complete(dest, entries.get(name), expected.get(name)):
                logger.info("%s already complete; not downloading it again", name)
                if name not in entries:
                    entries[name] = _entry(name, dest, expected[name], url)
                    _write_manifest(out, manifest)
                continue
            digest = _fetch(session, url, dest, expected.get(name), timeout, bar)
            entries[name] = _entry(name, dest, digest, url)
            _write_manifest(out, manifest)
    for name in files:
        if name.lower().endswith(".zip"):
            _install_images(out / name, out, manifest)
    _write_manifest(out, manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# The photo archive
# --------------------------------------------------------------------------------------------


def _check_member(member: str, archive: str) -> None:
    """Refuse members that would land outside the extraction folder (zip-slip)."""
    name = member.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
        raise DownloadError(
            f"{archive} member {member!r} would be written outside the output folder "
            "(path traversal), so nothing was extracted."
        )


def _find_dir(root: Path, wanted: str) -> Path | None:
    """The folder named ``wanted`` anywhere under ``root`` holding the most files.

    macOS resource forks (``__MACOSX``) and hidden folders are ignored: they mirror real folder
    names but hold no photos.
    """
    candidates: list[tuple[int, int, Path]] = []
    for current, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__MACOSX")))
        for folder in [d for d in dirs if d == wanted]:
            path = Path(current) / folder
            count = sum(1 for child in path.iterdir() if child.is_file())
            candidates.append((count, -len(path.relative_to(root).parts), path))
            dirs.remove(folder)
    return max(candidates, key=lambda item: item[:2])[2] if candidates else None


def _describe(names: Sequence[str], limit: int = 10) -> str:
    tops = sorted({"/".join(PurePosixPath(n.replace("\\", "/")).parts[:2]) for n in names})
    if not tops:
        return "nothing"
    shown = ", ".join(tops[:limit])
    return shown + (f" and {len(tops) - limit} more" if len(tops) > limit else "")


def _install_images(archive_path: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Unzip the photos safely and move ``image_train``/``image_test`` to ``out/images/``."""
    digest = manifest["files"][archive_path.name]["sha256"]
    extracted: dict[str, Any] = manifest.setdefault("extracted", {})
    targets = {subset: out / rel for subset, rel in IMAGE_DIRS.items()}
    record = extracted.get(archive_path.name)
    if record and record.get("sha256") == digest and all(t.is_dir() for t in targets.values()):
        logger.info("%s already extracted; leaving %s as is", archive_path.name, out / "images")
        return
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive_path.name} is not a valid zip archive: {exc}.") from exc
    with archive:
        members = archive.infolist()
        for info in members:
            _check_member(info.filename, archive_path.name)
        scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=out))
        try:
            logger.info("extracting %d members of %s", len(members), archive_path.name)
            archive.extractall(scratch)
            found = {subset: _find_dir(scratch, rel.name) for subset, rel in IMAGE_DIRS.items()}
            missing = [IMAGE_DIRS[subset].name for subset, path in found.items() if path is None]
            if missing:
                raise DownloadError(
                    f"{archive_path.name} has no {' or '.join(missing)} folder; it contains "
                    f"{_describe([info.filename for info in members])}."
                )
            counts: dict[str, int] = {}
            for subset, source in found.items():
                if source is None:  # unreachable after the missing check; keeps types narrow
                    continue
                target = targets[subset]
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(source, target)
                counts[IMAGE_DIRS[subset].name] = sum(1 for _ in target.glob("*.jpg"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    extracted[archive_path.name] = {"sha256": digest, **counts}
    logger.info("photos laid out under %s: %s", out / "images", counts)
