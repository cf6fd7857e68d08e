"""prodclass.data.download against a real loopback HTTP server serving the real sample data.

The server (threading ``http.server`` on 127.0.0.1, port 0) honours ``Range`` with 206 answers,
can drop the connection once after N bytes, can ignore ``Range``, and can send an ``ETag``; it
logs every request so tests can assert what went over the wire.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from tests.servers import free_port

from prodclass.data import download as dl
from prodclass.data.download import (
    DEFAULT_FILES,
    MANIFEST_NAME,
    DownloadError,
    download_dataset,
    download_file,
    read_checksums,
)
from prodclass.data.layout import X_TEST, X_TRAIN, Y_TRAIN

CSVS = (X_TRAIN, Y_TRAIN, X_TEST)
N_TRAIN_IMAGES = 20
N_TEST_IMAGES = 5
PREFIX = "/datasets/rakuten/"  # files live below a path, like on a real mirror


def _sample_dir() -> Path:
    env = os.environ.get("PRODCLASS_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared/data/rakuten_sample"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Loopback server
# --------------------------------------------------------------------------------------------


@dataclass
class Seen:
    name: str
    range: str | None


@dataclass
class Server:
    """Options and request log of one loopback server."""

    root: Path
    url: str = ""
    cut_after: dict[str, int] = field(default_factory=dict)  # name -> bytes, applied once
    etags: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (header, value)
    ignore_range: bool = False
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, name: str | None = None) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if name is None or r.name == name]


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path_part = unquote(urlsplit(self.path).path)
            name = path_part.removeprefix(PREFIX) if path_part.startswith(PREFIX) else ""
            with state.lock:
                state.requests.append(Seen(name, self.headers.get("Range")))
            path = state.root / name
            if not name or "/" in name or not path.is_file():
                self.send_error(404, "Not Found")
                return
            data = path.read_bytes()
            size, start, end, status = len(data), 0, len(data) - 1, 200
            wanted = None if state.ignore_range else self.headers.get("Range")
            if wanted:
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
                assert match, wanted
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start : end + 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            if name in state.etags:
                header, value = state.etags[name]
                self.send_header(header, value)
            self.end_headers()
            with state.lock:
                cut = state.cut_after.pop(name, None)
            if cut is not None and cut < len(body):
                self.wfile.write(body[:cut])
                self.close_connection = True  # HTTP/1.0: the socket closes mid-body
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Factory: start a loopback server for a folder; every server stops at teardown."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(root: Path, **options: object) -> Server:
        state = Server(root=root, **options)  # type: ignore[arg-type]
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((httpd, thread))
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}{PREFIX}"
        return state

    yield start
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries stay real, the waits between them do not."""
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)


# --------------------------------------------------------------------------------------------
# Served folder built from the real sample
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    served: Path  # what the server publishes
    source: Path  # the real sample folder
    train_images: tuple[str, ...]
    test_images: tuple[str, ...]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    source = _sample_dir()
    if not all((source / name).is_file() for name in CSVS):
        pytest.skip(f"real sample data not found in {source}")
    train = sorted(p.name for p in (source / "images/image_train").glob("*.jpg"))[:N_TRAIN_IMAGES]
    test = sorted(p.name for p in (source / "images/image_test").glob("*.jpg"))[:N_TEST_IMAGES]
    if len(train) < N_TRAIN_IMAGES or len(test) < N_TEST_IMAGES:
        pytest.skip(f"not enough sample photos in {source}")
    served = tmp_path_factory.mktemp("served")
    for name in CSVS:
        shutil.copyfile(source / name, served / name)
    with zipfile.ZipFile(served / "images_low.zip", "w", zipfile.ZIP_STORED) as archive:
        for subset, names in (("image_train", train), ("image_test", test)):
            for name in names:
                archive.write(source / "images" / subset / name, f"images_low/{subset}/{name}")
    return Sample(served, source, tuple(train), tuple(test))


def _zip_with(folder: Path, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "images_low.zip", "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return folder


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_default_files_are_the_challenge_files() -> None:
    assert DEFAULT_FILES == (X_TRAIN, Y_TRAIN, X_TEST, "images_low.zip")


def test_full_download_produces_the_challenge_layout(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    out = tmp_path / "out"

    manifest = download_dataset(server.url.rstrip("/"), out, progress=False, timeout=5)

    for name in CSVS:
        assert (out / name).read_bytes() == (sample.source / name).read_bytes()
    train_dir, test_dir = out / "images/image_train", out / "images/image_test"
    assert sorted(p.name for p in train_dir.iterdir()) == list(sample.train_images)
    assert sorted(p.name for p in test_dir.iterdir()) == list(sample.test_images)
    first = sample.train_images[0]
    assert (train_dir / first).read_bytes() == (
        sample.source / "images/image_train" / first
    ).read_bytes()

    on_disk = json.loads((out / MANIFEST_NAME).read_text())
    assert on_disk == manifest
    assert set(manifest["files"]) == set(DEFAULT_FILES)
    for name in DEFAULT_FILES:
        entry = manifest["files"][name]
        data = (sample.served / name).read_bytes()
        assert entry == {
            "name": name,
            "size": len(data),
            "sha256": _sha(data),
            "url": server.url + name,
        }
    assert manifest["extracted"]["images_low.zip"]["image_train"] == N_TRAIN_IMAGES
    assert manifest["extracted"]["images_low.zip"]["image_test"] == N_TEST_IMAGES
    leftovers = [p.name for p in out.iterdir() if p.name.endswith((".part", ".tmp"))]
    assert leftovers == [] and not list(out.glob(".extract-*"))


def test_interrupted_transfer_is_resumed_with_range(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    cut = 100_000
    server = serve(sample.served, cut_after={X_TRAIN: cut})
    out = tmp_path / "out"

    download_dataset(server.url, out, files=[X_TRAIN], progress=False, timeout=5)

    first, second = server.seen(X_TRAIN)  # exactly two GETs: the cut one and the resume
    assert first.range is None
    # The client keeps what it had written when the drop surfaced (at most one chunk less).
    match = re.fullmatch(r"bytes=(\d+)-", second.range or "")
    assert match, second.range
    resumed_at = int(match.group(1))
    assert 0 < resumed_at <= cut
    assert (out / X_TRAIN).read_bytes() == (sample.source / X_TRAIN).read_bytes()
    assert not (out / f"{X_TRAIN}.part").exists()


def test_part_file_from_an_earlier_run_is_resumed(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    original = (sample.source / X_TRAIN).read_bytes()
    dest = tmp_path / X_TRAIN
    (tmp_path / f"{X_TRAIN}.part").write_bytes(original[:5000])

    digest = download_file(server.url + X_TRAIN, dest, _sha(original), progress=False)

    assert [r.range for r in server.seen()] == ["bytes=5000-"]
    assert dest.read_bytes() == original and digest == _sha(original)


def test_server_ignoring_range_restarts_from_zero(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served, ignore_range=True)
    original = (sample.source / Y_TRAIN).read_bytes()
    dest = tmp_path / Y_TRAIN
    (tmp_path / f"{Y_TRAIN}.part").write_bytes(b"stale bytes that must not survive")

    download_file(server.url + Y_TRAIN, dest, progress=False)

    assert [r.range for r in server.seen()] == ["bytes=33-"]
    assert dest.read_bytes() == original


def test_complete_part_file_is_accepted_on_416(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    original = (sample.source / Y_TRAIN).read_bytes()
    dest = tmp_path / Y_TRAIN
    (tmp_path / f"{Y_TRAIN}.part").write_bytes(original)

    digest = download_file(server.url + Y_TRAIN, dest, progress=False)

    assert [r.range for r in server.seen()] == [f"bytes={len(original)}-"]
    assert dest.read_bytes() == original and digest == _sha(original)


def test_second_call_downloads_nothing(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    out = tmp_path / "out"
    first = download_dataset(server.url, out, progress=False)
    assert len(server.seen()) == len(DEFAULT_FILES)

    second = download_dataset(server.url, out, progress=False)

    assert len(server.seen()) == len(DEFAULT_FILES)
    assert second == first
    assert len(list((out / "images/image_train").iterdir())) == N_TRAIN_IMAGES


def test_damaged_file_is_downloaded_again(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    out = tmp_path / "out"
    download_dataset(server.url, out, files=CSVS, progress=False)
    original = (out / Y_TRAIN).read_bytes()
    (out / Y_TRAIN).write_bytes(original[:-1] + b"X")  # same size, different content

    download_dataset(server.url, out, files=CSVS, progress=False)

    assert [r.name for r in server.seen()] == [*CSVS, Y_TRAIN]
    assert (out / Y_TRAIN).read_bytes() == original


def test_expected_checksums_are_verified(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(
        "# sha256sum output\n"
        + "".join(
            f"{_sha((sample.served / n).read_bytes())} {'*' if i else ' '}{n}\n"
            for i, n in enumerate(CSVS)
        )
    )
    checksums = read_checksums(sums)
    assert set(checksums) == set(CSVS)

    manifest = download_dataset(
        server.url, tmp_path / "out", files=CSVS, checksums=checksums, progress=False
    )

    assert {n: e["sha256"] for n, e in manifest["files"].items()} == checksums


def test_malformed_checksum_file_is_a_download_error(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("not-a-checksum  X_train_update.csv\n")
    with pytest.raises(DownloadError, match="sha256sum format"):
        read_checksums(sums)
    with pytest.raises(DownloadError, match="Cannot read"):
        read_checksums(tmp_path / "missing")


def test_wrong_expected_checksum_fails_and_leaves_no_file(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    out = tmp_path / "out"

    with pytest.raises(DownloadError, match="was expected"):
        download_dataset(
            server.url, out, files=[Y_TRAIN], checksums={Y_TRAIN: "0" * 64}, progress=False
        )

    assert not (out / Y_TRAIN).exists() and not (out / f"{Y_TRAIN}.part").exists()
    manifest_path = out / MANIFEST_NAME
    assert not manifest_path.exists() or Y_TRAIN not in json.loads(manifest_path.read_text())


@pytest.mark.parametrize("header", ["ETag", "X-Linked-Etag"])
def test_sha256_etag_is_checked(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path, header: str
) -> None:
    good = _sha((sample.served / Y_TRAIN).read_bytes())
    server = serve(sample.served, etags={Y_TRAIN: (header, f'"{good}"')})
    assert download_file(server.url + Y_TRAIN, tmp_path / "ok" / Y_TRAIN, progress=False) == good

    server.etags[Y_TRAIN] = (header, f'"{"ab" * 32}"')
    dest = tmp_path / "bad" / Y_TRAIN
    with pytest.raises(DownloadError, match="ETag"):
        download_file(server.url + Y_TRAIN, dest, progress=False)
    assert not dest.exists() and not dest.with_name(f"{Y_TRAIN}.part").exists()


def test_non_sha256_etag_is_ignored(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served, etags={Y_TRAIN: ("ETag", '"5d41402abc4b2a76b9719d911017c592"')})
    dest = tmp_path / Y_TRAIN
    download_file(server.url + Y_TRAIN, dest, progress=False)
    assert dest.read_bytes() == (sample.source / Y_TRAIN).read_bytes()


@pytest.mark.parametrize(
    "evil", ["../evil.txt", "images_low/../../evil.txt", "/tmp/prodclass-evil.txt"]
)
def test_zip_path_traversal_is_rejected(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path, evil: str
) -> None:
    photo = (sample.source / "images/image_train" / sample.train_images[0]).read_bytes()
    served = _zip_with(
        tmp_path / "served",
        {
            f"images_low/image_train/{sample.train_images[0]}": photo,
            f"images_low/image_test/{sample.train_images[0]}": photo,
            evil: b"owned\n",
        },
    )
    server = serve(served)
    out = tmp_path / "work" / "out"

    with pytest.raises(DownloadError, match="path traversal"):
        download_dataset(server.url, out, files=["images_low.zip"], progress=False)

    assert _files_under(tmp_path / "work") == {
        "out/images_low.zip",
        f"out/{MANIFEST_NAME}",
    }
    assert not list(tmp_path.rglob("*evil*")) and not Path("/tmp/prodclass-evil.txt").exists()


def test_zip_without_image_folders_names_what_it_found(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    photo = (sample.source / "images/image_train" / sample.train_images[0]).read_bytes()
    served = _zip_with(tmp_path / "served", {f"photos/train/{sample.train_images[0]}": photo})
    server = serve(served)

    with pytest.raises(DownloadError, match=r"no image_train or image_test folder.*photos/train"):
        download_dataset(server.url, tmp_path / "out", files=["images_low.zip"], progress=False)

    assert not (tmp_path / "out/images").exists()


def test_http_404_names_url_and_status(
    sample: Sample, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(sample.served)
    with pytest.raises(DownloadError, match=r"missing\.csv failed with HTTP 404") as info:
        download_dataset(server.url, tmp_path / "out", files=["missing.csv"], progress=False)
    assert server.url in str(info.value)
    assert len(server.seen()) == 1  # client errors are not retried


def test_unreachable_server_fails_after_bounded_retries(tmp_path: Path) -> None:
    port = free_port()  # a port nobody listens on
    with pytest.raises(DownloadError, match=f"after {dl.MAX_RETRIES} retries"):
        download_file(
            f"http://127.0.0.1:{port}/{Y_TRAIN}", tmp_path / Y_TRAIN, progress=False, timeout=2
        )


def test_plain_file_names_only(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="plain file names"):
        download_dataset("http://127.0.0.1:9/", tmp_path, files=["../x.csv"], progress=False)
