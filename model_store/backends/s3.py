"""S3 storage through boto3. The same code talks to AWS S3 and to the local endpoint.

Conditional writes use S3's own preconditions: ``If-None-Match: *`` to create-if-absent and
``If-Match: <etag>`` to replace-if-unchanged. A 412 (or 409 for a concurrent conditional write)
becomes PreconditionFailedError.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from model_store.backends.base import StoredObject
from model_store.errors import ObjectNotFoundError, PreconditionFailedError

if TYPE_CHECKING:
    from flywheel.settings import FlywheelSettings

_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def s3_client(settings: FlywheelSettings, max_attempts: int = 5, timeout_s: float = 60) -> Any:
    """A boto3 S3 client for the configured endpoint, path-style so loopback endpoints work."""
    from flywheel.stack.credentials import s3_credentials

    credentials = s3_credentials(settings)
    key_id, secret = credentials if credentials is not None else (None, None)
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_url,
        region_name=settings.s3_region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=min(5, timeout_s),
            read_timeout=timeout_s,
        ),
    )


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Storage:
    """Objects under ``s3://bucket/prefix``."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str) -> StoredObject:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                raise ObjectNotFoundError(key) from None
            raise
        return StoredObject(data=response["Body"].read(), etag=response["ETag"].strip('"'))

    def etag(self, key: str) -> str | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                return None
            raise
        return str(response["ETag"]).strip('"')

    def _put(self, key: str, data: bytes, **conditions: str) -> str:
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)
        except ClientError as error:
            code = _error_code(error)
            if code in _PRECONDITION_CODES:
                raise PreconditionFailedError(f"conditional write of {key!r} lost: {code}") from None
            if conditions.get("IfMatch") and code in _MISSING_CODES:
                raise PreconditionFailedError(f"{key!r} no longer exists") from None
            raise
        return str(response["ETag"]).strip('"')

    def put(self, key: str, data: bytes) -> str:
        return self._put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._put(key, data, IfNoneMatch="*")

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return self._put(key, data, IfMatch=f'"{etag}"')

    def put_file(self, key: str, source: Path) -> str:
        self.client.upload_file(str(source), self.bucket, self._key(key))
        return self.etag(key) or ""

    def get_file(self, key: str, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.parent / f".{destination.name}.part-{uuid.uuid4().hex}"
        try:
            self.client.download_file(self.bucket, self._key(key), str(temporary))
            temporary.replace(destination)
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                raise ObjectNotFoundError(key) from None
            raise
        finally:
            temporary.unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def list_children(self, prefix: str) -> list[str]:
        full_prefix = self._key(prefix.rstrip("/") + "/") if prefix.strip("/") else self.prefix
        names: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix, Delimiter="/"):
            names.update(p["Prefix"][len(full_prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(item["Key"][len(full_prefix) :] for item in page.get("Contents", []))
        return sorted(name for name in names if name)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
