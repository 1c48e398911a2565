"""Bucket creation for the local S3 endpoint."""

from __future__ import annotations

from botocore.exceptions import ClientError

from flywheel.settings import FlywheelSettings
from model_store.backends.s3 import s3_client


def ensure_bucket(settings: FlywheelSettings, bucket: str) -> bool:
    """Create ``bucket`` unless it exists; returns True when it was created."""
    client = s3_client(settings)
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    client.create_bucket(Bucket=bucket)
    return True
