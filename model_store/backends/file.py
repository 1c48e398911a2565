"""Local-folder storage with the same atomicity as S3.

- Every write goes to a hidden temporary file in the target folder, is fsynced, then renamed into
  place, so a reader never sees a half-written object.
- create-if-absent uses ``os.link``, which fails atomically when the name exists.
- replace-if-unchanged holds an ``flock`` on a per-key lock file while it compares ETags, so
  concurrent writers in different processes serialise.
ETags are the MD5 of the content, as S3 computes them for single-part uploads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from model_store.backends.base import StoredObject
from model_store.errors import InvalidNameError, ObjectNotFoundError, PreconditionFailedError

_LOCK_DIR = ".locks"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FileStorage:
    """Objects are files below ``root``; names starting with '.' are internal and never listed."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise InvalidNameError(f"key {key!r} escapes the storage root")
        return path

    def _temporary_sibling(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"

    def _write_temporary(self, path: Path, data: bytes) -> Path:
        temporary = self._temporary_sibling(path)
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return temporary

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        lock_dir = self.root / _LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock_path = lock_dir / hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def get(self, key: str) -> StoredObject:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        return StoredObject(data=data, etag=_md5(data))

    def etag(self, key: str) -> str | None:
        path = self._path(key)
        return _md5_file(path) if path.is_file() else None

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        os.replace(self._write_temporary(path, data), path)
        return _md5(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        temporary = self._write_temporary(path, data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise PreconditionFailedError(f"{key!r} already exists") from None
        finally:
            temporary.unlink()
        return _md5(data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        path = self._path(key)
        with self._key_lock(key):
            current = self.etag(key)
            if current != etag:
                raise PreconditionFailedError(
                    f"{key!r} changed since it was read (ETag {current} is not the expected {etag})"
                )
            os.replace(self._write_temporary(path, data), path)
        return _md5(data)

    def put_file(self, key: str, source: Path) -> str:
        path = self._path(key)
        temporary = self._temporary_sibling(path)
        shutil.copyfile(source, temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return _md5_file(path)

    def get_file(self, key: str, destination: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFoundError(key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.parent / f".{destination.name}.part-{uuid.uuid4().hex}"
        try:
            shutil.copyfile(source, temporary)
            os.replace(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> Iterator[str]:
        folder_key, _, _ = prefix.rpartition("/")
        folder = self._path(folder_key) if folder_key else self.root
        if not folder.is_dir():
            return
        for directory, subdirectories, files in os.walk(folder):
            subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
            for file_name in files:
                if file_name.startswith("."):
                    continue
                key = (Path(directory) / file_name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def list_children(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not folder.is_dir():
            return []
        return sorted(name for name in os.listdir(folder) if not name.startswith("."))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
