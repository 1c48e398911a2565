"""The local S3 endpoint: moto's S3 server, made durable and single-writer.

``moto_server`` keeps objects only in memory, so on its own the raw-data landing zone would vanish
at every ``flywheel down``. This launcher runs moto's own WSGI application with two additions:

- **Write-through mirror.** After every successful mutating request (PUT, POST, DELETE) the
  affected bucket or object is read back from moto's backend and written under ``--data-dir``
  (data first, then its metadata, each by atomic rename). On start, the mirror is loaded back
  before the port opens, with the original ETags, so ingest's key+ETag bookkeeping stays valid.
- **Serialised writes.** Mutating requests run one at a time. moto checks ``If-None-Match`` and
  ``If-Match`` and then stores in two steps; serialising makes conditional puts atomic, as they
  are on AWS S3, which the model store's race-free publishing relies on.

Run as ``python -m flywheel.stack.s3_server --host 127.0.0.1 --port 9000 --data-dir var/s3``.
Path-style addressing (``http://host:port/bucket/key``) is what the mirror understands; every
Flywheel client is configured that way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

logger = logging.getLogger("flywheel.s3")

_MUTATING_METHODS = {"PUT", "POST", "DELETE"}
_BUCKET_MARKER = ".bucket.json"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class DurableMirror:
    """Buckets and objects of one moto backend, mirrored to a folder.

    ``<root>/<bucket>/.bucket.json`` marks a bucket; each object is ``<sha256(key)>.data`` plus a
    ``<sha256(key)>.meta.json`` that holds the key, ETag and content type. Hashing the key keeps
    keys like ``a`` and ``a/b`` from colliding as file and folder.
    """

    def __init__(self, root: Path, region: str = "us-east-1") -> None:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        self.root = root
        self.region = region
        self.root.mkdir(parents=True, exist_ok=True)
        self._backends = s3_backends
        self._default_backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def _backend_for(self, bucket: str) -> Any:
        owner = self._backends.bucket_accounts.get(bucket)
        if owner is None:
            return self._default_backend
        first, second = owner
        account, partition = (first, second) if first.isdigit() else (second, first)
        return self._backends[account][partition]

    @staticmethod
    def _object_stem(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    # Loading -------------------------------------------------------------------------------
    def restore(self) -> tuple[int, int]:
        """Load every mirrored bucket and object into moto; returns (buckets, objects)."""
        buckets = objects = 0
        for bucket_dir in sorted(path for path in self.root.iterdir() if (path / _BUCKET_MARKER).is_file()):
            self._default_backend.create_bucket(bucket_dir.name, self.region)
            buckets += 1
            for meta_path in bucket_dir.glob("*.meta.json"):
                data_path = meta_path.with_name(meta_path.name.removesuffix(".meta.json") + ".data")
                if not data_path.is_file():
                    continue  # a crash between data and metadata: the write never completed
                meta = json.loads(meta_path.read_text())
                fake_key = self._default_backend.put_object(
                    bucket_dir.name, meta["key"], data_path.read_bytes(), etag=meta["etag"]
                )
                if meta.get("content_type"):
                    fake_key.set_metadata({"Content-Type": meta["content_type"]})
                objects += 1
        return buckets, objects

    # Syncing after a successful write -------------------------------------------------------
    def sync_bucket_exists(self, bucket: str) -> None:
        backend = self._backend_for(bucket)
        bucket_dir = self.root / bucket
        if bucket in backend.buckets:
            bucket_dir.mkdir(parents=True, exist_ok=True)
            marker = bucket_dir / _BUCKET_MARKER
            if not marker.exists():
                _write_atomically(marker, json.dumps({"name": bucket}).encode())
        elif bucket_dir.exists():
            for child in bucket_dir.iterdir():
                child.unlink()
            bucket_dir.rmdir()

    def sync_object(self, bucket: str, key: str) -> None:
        bucket_dir = self.root / bucket
        if not (bucket_dir / _BUCKET_MARKER).exists():
            self.sync_bucket_exists(bucket)
        stem = self._object_stem(key)
        data_path, meta_path = bucket_dir / f"{stem}.data", bucket_dir / f"{stem}.meta.json"
        backend = self._backend_for(bucket)
        fake_key = backend.get_object(bucket, key) if bucket in backend.buckets else None
        if fake_key is None:
            meta_path.unlink(missing_ok=True)
            data_path.unlink(missing_ok=True)
            return
        # Remove the old metadata first so that a crash mid-write never pairs new data with old meta.
        meta_path.unlink(missing_ok=True)
        _write_atomically(data_path, fake_key.value)
        meta = {
            "key": key,
            "etag": fake_key.etag.strip('"'),
            "content_type": fake_key.metadata.get("Content-Type") if fake_key.metadata else None,
        }
        _write_atomically(meta_path, json.dumps(meta).encode())

    def sync_whole_bucket(self, bucket: str) -> None:
        """After a multi-object delete: drop mirrored objects moto no longer has."""
        self.sync_bucket_exists(bucket)
        bucket_dir = self.root / bucket
        if not bucket_dir.exists():
            return
        backend = self._backend_for(bucket)
        live = set(backend.buckets[bucket].keys.keys()) if bucket in backend.buckets else set()
        for meta_path in bucket_dir.glob("*.meta.json"):
            key = json.loads(meta_path.read_text())["key"]
            if key not in live:
                self.sync_object(bucket, key)


class DurableWriteMiddleware:
    """WSGI middleware: serialise mutating requests and mirror their effect after success."""

    def __init__(self, app: Callable[..., Iterable[bytes]], mirror: DurableMirror) -> None:
        self.app = app
        self.mirror = mirror
        self._write_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in _MUTATING_METHODS:
            return self.app(environ, start_response)
        captured: dict[str, str] = {}

        def capturing_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            captured["status"] = status
            return start_response(status, headers, exc_info)

        with self._write_lock:
            body = list(self.app(environ, capturing_start_response))
            if captured.get("status", "500").startswith("2"):
                self._mirror(environ)
        return body

    def _mirror(self, environ: dict[str, Any]) -> None:
        path = unquote(environ.get("PATH_INFO", ""))
        bucket, _, key = path.lstrip("/").partition("/")
        if not bucket or bucket.startswith("moto-api"):
            return
        query = environ.get("QUERY_STRING", "")
        if not key:
            if environ["REQUEST_METHOD"] == "POST" and "delete" in query:
                self.mirror.sync_whole_bucket(bucket)
            else:
                self.mirror.sync_bucket_exists(bucket)
            return
        if environ["REQUEST_METHOD"] == "PUT" and "partNumber=" in query:
            return  # an upload part is invisible until CompleteMultipartUpload (a POST) succeeds
        self.mirror.sync_object(bucket, key)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Durable local S3 endpoint (moto) for Flywheel.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from moto.moto_server.werkzeug_app import create_backend_app
    from werkzeug.serving import make_server

    mirror = DurableMirror(args.data_dir, args.region)
    buckets, objects = mirror.restore()
    logger.info("restored %d buckets and %d objects from %s", buckets, objects, args.data_dir)
    app = DurableWriteMiddleware(create_backend_app("s3"), mirror)
    server = make_server(args.host, args.port, app, threaded=True)

    def shutdown(signum: int, frame: Any) -> None:
        logger.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    logger.info("serving S3 on http://%s:%d", args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
