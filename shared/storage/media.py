"""The media store: snapshots and recording segments, on a filesystem or in S3.

One small interface (:class:`MediaStore`): ``put``, ``get``, ``get_range``, ``size``,
``delete``, ``list``, ``usage``, ``free_space``.  Keys are relative, ``/``-separated
names built by :func:`snapshot_key` and :func:`segment_key` from ids that came from
the network; every id component is escaped (:func:`safe_component`) and every key
checked (:func:`check_key`) so no id can name a path outside the media root: ``..``,
``%2F``, absolute paths and NUL bytes are escaped or refused.

Errors: :class:`MediaNotFound` (no such object), :class:`MediaFull` (ENOSPC or the
store refused the size), :class:`MediaUnavailable` (I/O error, S3 outage).  Callers
on the frame path drop, count and carry on; nothing here retries or blocks long.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEY = re.compile(r"^[A-Za-z0-9_.%=-]{1,255}(/[A-Za-z0-9_.%=-]{1,255}){0,15}$")
SAFE_CHARS = re.compile(r"[A-Za-z0-9_-]")
MAX_KEY = 1024


class MediaError(Exception):
    """Base of media store errors."""


class MediaNotFound(MediaError):
    pass


class MediaFull(MediaError):
    """No space left (ENOSPC) or over quota."""


class MediaUnavailable(MediaError):
    """The store cannot be reached or failed (I/O error, S3 outage)."""


class BadKey(MediaError, ValueError):
    """A key that could name something outside the media root."""


def safe_component(value: str) -> str:
    """Escape one id into a single path component that is never ``.``/``..``.

    Letters, digits, ``_`` and ``-`` stay; every other byte (``/``, ``.``, ``%``,
    ``\\``, NUL ...) becomes ``%XX``, so ``a/b`` and ``a%2Fb`` map to different,
    harmless names and the mapping is reversible (:func:`unescape_component`)."""
    if not isinstance(value, str) or not value:
        raise BadKey("empty id")
    out = []
    for ch in value:
        if SAFE_CHARS.match(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    comp = "".join(out)
    if len(comp) > 255:
        raise BadKey("id too long")
    return comp


def unescape_component(comp: str) -> str:
    from urllib.parse import unquote

    return unquote(comp)


def check_key(key: str) -> str:
    """Refuse any key that is not a plain relative name inside the root."""
    if not isinstance(key, str) or len(key) > MAX_KEY or not KEY.match(key):
        raise BadKey(f"bad media key {key!r:.80}")
    if any(part in (".", "..") for part in key.split("/")):
        raise BadKey(f"bad media key {key!r:.80}")
    return key


def snapshot_key(snapshot_id: str) -> str:
    """``snapshots/<shard>/<id>.jpg``: found from the id alone (events, Redis pointers
    and the gateway all know it), spread over 256 directories."""
    comp = safe_component(snapshot_id)
    shard = hashlib.blake2b(snapshot_id.encode(), digest_size=1).hexdigest()
    return f"snapshots/{shard}/{comp}.jpg"


def segment_key(camera_id: str, start_ms: int, end_ms: int) -> str:
    day = time.strftime("%Y-%m-%d/%H", time.gmtime(start_ms / 1000))
    return f"recordings/{safe_component(camera_id)}/{day}/{int(start_ms)}-{int(end_ms)}.mp4"


def camera_prefix(kind: str, camera_id: str) -> str:
    return f"{kind}/{safe_component(camera_id)}/"


def camera_of_key(key: str) -> str | None:
    """The camera id encoded in a recording key (None for other keys)."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "recordings":
        return unescape_component(parts[1])
    return None


@dataclass(frozen=True)
class MediaObject:
    key: str
    size: int
    mtime: float


class MediaStore:
    """Interface of a media store backend."""

    kind = "none"

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive (like HTTP Range), clipped to the object."""
        raise NotImplementedError

    def size(self, key: str) -> int | None:
        raise NotImplementedError

    def delete(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[MediaObject]:
        raise NotImplementedError

    def usage(self, prefix: str = "") -> int:
        return sum(o.size for o in self.list(prefix))

    def free_space(self) -> tuple[int, int] | None:
        """(free bytes, total bytes) of the underlying filesystem, None when unknown."""
        return None

    def close(self) -> None:
        pass


def _check_prefix(prefix: str) -> str:
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


class FsMediaStore(MediaStore):
    """Files under one root directory; writes are atomic (temp file + rename)."""

    kind = "fs"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        check_key(key)
        p = (self.root / key).resolve()
        if p != self.root and self.root not in p.parents:  # symlinks out of the root
            raise BadKey(f"bad media key {key!r:.80}")
        return p

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        p = self.path(key)
        tmp = None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
            tmp = None
            return len(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise MediaFull(str(exc)) from exc
            raise MediaUnavailable(str(exc)) from exc
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MediaNotFound(key) from None
        except OSError as exc:
            raise MediaUnavailable(str(exc)) from exc

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError("bad range")
        try:
            with open(self.path(key), "rb") as f:
                f.seek(start)
                return f.read(end - start + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MediaNotFound(key) from None
        except OSError as exc:
            raise MediaUnavailable(str(exc)) from exc

    def size(self, key: str) -> int | None:
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_size

    def delete(self, key: str) -> bool:
        p = self.path(key)
        try:
            p.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        # Tidy empty directories up to the root (best effort).
        parent = p.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    def list(self, prefix: str = "") -> Iterator[MediaObject]:
        _check_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".tmp-"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                yield MediaObject(key, st.st_size, st.st_mtime)

    def free_space(self) -> tuple[int, int] | None:
        du = shutil.disk_usage(self.root)
        return du.free, du.total


class S3MediaStore(MediaStore):
    """Objects in one S3 bucket (optionally under a key prefix), through boto3."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        prefix: str = "",
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout_s: float = 5.0,
        create_bucket: bool = True,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )
        if create_bucket:
            try:
                self._ensure_bucket()
            except MediaUnavailable as exc:
                # Start anyway: writes fail (dropped, counted) until S3 is back.
                log.warning("S3 bucket not reachable at start", extra={"bucket": bucket,
                            "error": str(exc)[:200]})  # fmt: skip

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.s3.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise MediaUnavailable(str(exc)) from exc
        except BotoCoreError as exc:
            raise MediaUnavailable(str(exc)) from exc

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, fn, key: str, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise MediaNotFound(key) from None
            if code in ("EntityTooLarge", "QuotaExceeded", "InsufficientStorage", "507"):
                raise MediaFull(str(exc)) from exc
            if code == "InvalidRange":
                return None
            raise MediaUnavailable(str(exc)) from exc
        except BotoCoreError as exc:
            raise MediaUnavailable(str(exc)) from exc

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        self._call(self.s3.put_object, key, Key=self._k(key), Body=data, ContentType=content_type)
        return len(data)

    def get(self, key: str) -> bytes:
        return self._call(self.s3.get_object, key, Key=self._k(key))["Body"].read()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError("bad range")
        res = self._call(self.s3.get_object, key, Key=self._k(key), Range=f"bytes={start}-{end}")
        return b"" if res is None else res["Body"].read()

    def size(self, key: str) -> int | None:
        try:
            return int(self._call(self.s3.head_object, key, Key=self._k(key))["ContentLength"])
        except MediaNotFound:
            return None

    def delete(self, key: str) -> bool:
        if self.size(key) is None:
            return False
        self._call(self.s3.delete_object, key, Key=self._k(key))
        return True

    def list(self, prefix: str = "") -> Iterator[MediaObject]:
        _check_prefix(prefix)
        token = None
        while True:
            kw: dict[str, Any] = {"Prefix": self.prefix + prefix}
            if token:
                kw["ContinuationToken"] = token
            res = self._call(self.s3.list_objects_v2, prefix, **kw)
            for obj in res.get("Contents", []) or []:
                key = obj["Key"][len(self.prefix) :]
                yield MediaObject(key, int(obj["Size"]), obj["LastModified"].timestamp())
            if not res.get("IsTruncated"):
                return
            token = res.get("NextContinuationToken")

    def close(self) -> None:
        self.s3.close()


def open_media_store(config: Any, state_dir: str) -> MediaStore:
    """The store the ``storage`` section selects (a :class:`StorageConfig`)."""
    if config.backend == "s3":
        return S3MediaStore(
            config.s3_bucket,
            endpoint=config.s3_endpoint,
            prefix=config.s3_prefix,
            region=config.s3_region,
            access_key=config.s3_access_key,
            secret_key=config.s3_secret_key.get_secret_value() if config.s3_secret_key else None,
            timeout_s=config.s3_timeout_s,
        )
    return FsMediaStore(config.media_root(state_dir))
