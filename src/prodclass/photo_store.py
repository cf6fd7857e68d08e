"""Where the photos clients send are kept, once each, by the SHA-256 of their bytes.

The prediction log writes them; the review queue's photo route, the feedback export and the
drift check read them. With several API replicas they must all see the same photos, so the
store is chosen by ``PRODCLASS_PHOTO_STORE_URL``: unset, a folder on this machine
(``state_dir/uploads``: one machine); ``s3://bucket/prefix``, an S3-compatible bucket every
replica and batch job reaches (``PRODCLASS_S3_ENDPOINT_URL`` for MinIO and the like,
credentials from the standard AWS variables). Both lay photos out as ``<sha[:2]>/<sha>``.

A store that does not answer raises ``PhotoStoreError`` (the prediction log keeps its records
and retries; the API answers 503); a photo that is not there is ``None``, not an error.
"""

from __future__ import annotations

import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prodclass.files import atomic_write

if TYPE_CHECKING:
    from prodclass.settings import Settings

SHA256 = re.compile(r"[0-9a-f]{64}")
# S3 answers for "no such object" (head_object has no body, hence the bare status)
MISSING = {"NoSuchKey", "404", "NotFound"}


class PhotoStoreError(RuntimeError):
    """The store did not answer or refused the request (network, credentials, bucket)."""


def _checked(sha: str) -> str:
    """The content hash as a safe name: a key or path built from anything else is refused."""
    if not SHA256.fullmatch(sha):
        raise ValueError(f"not a SHA-256 hex digest: {sha[:80]!r}")
    return sha


class PhotoStore(ABC):
    """Photos by content hash. ``put`` of a photo already there rewrites the same bytes."""

    @abstractmethod
    def put(self, sha: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, sha: str) -> bytes | None:
        """The photo's bytes, or None when it is not stored."""

    @abstractmethod
    def exists(self, sha: str) -> bool: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the photos are, for logs."""

    def save_as(self, sha: str, dest: Path) -> bool:
        """Write the photo to ``dest`` (the feedback export's copy); False when not stored."""
        data = self.get(sha)
        if data is None:
            return False
        atomic_write(dest, lambda out: out.write(data))
        return True

    def local_path(self, sha: str, scratch: Path) -> Path | None:
        """A file on this machine holding the photo, for code that reads paths (the models):
        a copy under ``scratch`` (the caller's to delete), None when not stored."""
        dest = scratch / _checked(sha)
        if dest.is_file() or self.save_as(sha, dest):
            return dest
        return None


class LocalPhotoStore(PhotoStore):
    """A folder on this machine: what a single machine uses (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / _checked(sha)

    def put(self, sha: str, data: bytes) -> None:
        # readers (another thread, another process on a shared volume) never see half a photo
        atomic_write(self.path(sha), lambda out: out.write(data))

    def get(self, sha: str) -> bytes | None:
        try:
            return self.path(sha).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def describe(self) -> str:
        return f"the folder {self.root}"

    def save_as(self, sha: str, dest: Path) -> bool:
        source = self.path(sha)
        if not source.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return True

    def local_path(self, sha: str, scratch: Path) -> Path | None:
        path = self.path(sha)  # already a file here: no copy
        return path if path.is_file() else None


class S3PhotoStore(PhotoStore):
    """A bucket (AWS S3, MinIO, Ceph...) every replica reaches; keys ``prefix/<sha[:2]>/<sha>``.

    Timeouts are short and retries few: the prediction log retries a failed write itself, and
    a reviewer waiting for a photo is better told 503 than kept a minute."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        config = Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": 3},
        )
        # a client is thread-safe (the log writer and request threads share it); a session not
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=config
        )

    def key(self, sha: str) -> str:
        name = f"{sha[:2]}/{_checked(sha)}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, sha: str, data: bytes) -> None:
        self._call("put_object", Bucket=self.bucket, Key=self.key(sha), Body=data)

    def get(self, sha: str) -> bytes | None:
        answer = self._call("get_object", Bucket=self.bucket, Key=self.key(sha))
        return None if answer is None else answer["Body"].read()

    def exists(self, sha: str) -> bool:
        return self._call("head_object", Bucket=self.bucket, Key=self.key(sha)) is not None

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """The client's answer, None for a missing object, PhotoStoreError for the rest."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING:
                return None
            raise PhotoStoreError(f"{self.describe()}: {operation} refused ({code})") from exc
        except BotoCoreError as exc:
            raise PhotoStoreError(f"{self.describe()}: {operation} failed ({exc})") from exc


def open_photo_store(settings: Settings) -> PhotoStore:
    """The store the settings name: the bucket of ``photo_store_url``, else ``upload_dir``."""
    if not settings.photo_store_url:
        return LocalPhotoStore(settings.upload_dir)
    parts = urlsplit(settings.photo_store_url)
    return S3PhotoStore(parts.netloc, parts.path, settings.s3_endpoint_url or None)
