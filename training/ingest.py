"""Incremental S3 ingest: snapshot only the raw objects no earlier snapshot took.

Objects are identified by (key, ETag), so a rewritten object counts as new and an unchanged one
never does. Each new object's header is checked against the CSV contract before anything is
written; the objects are copied into ``datasets/<name>/<snapshot>/raw/``; the manifest is
written last. When nothing is new, the result says so and the caller skips the run.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.backends.base import ObjectStorage
from model_store.datasets import DatasetStore, SnapshotManifest, SourceObject
from model_store.store import sha256_file
from training.contract import REQUIRED_CSV_COLUMNS


class IngestError(ValueError):
    """A raw object that cannot be ingested; the message names it and says why."""


@dataclass(frozen=True)
class IngestResult:
    snapshot: SnapshotManifest | None
    new_objects: int
    already_seen: int

    @property
    def skipped(self) -> bool:
        return self.snapshot is None


def check_csv_header(path: Path, source: str) -> None:
    """Refuse files whose header lacks a required column, or that hold no data row."""
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        header = handle.readline().strip()
        first_row = handle.readline().strip()
    if not header:
        raise IngestError(f"{source}: the file is empty")
    columns = [column.strip() for column in header.split(",")]
    missing = [column for column in REQUIRED_CSV_COLUMNS if column not in columns]
    if missing:
        raise IngestError(
            f"{source}: schema mismatch: missing column(s) {', '.join(missing)}; "
            f"expected a Yahoo-style header {','.join(REQUIRED_CSV_COLUMNS)} (Adj Close optional); "
            f"got {header!r}"
        )
    if not first_row:
        raise IngestError(f"{source}: the file has a header but no data rows")


def snapshot_id_for(objects: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256("\n".join(f"{key}\t{etag}" for key, etag in sorted(objects)).encode())
    return f"snap-{digest.hexdigest()[:16]}"


def list_raw_objects(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].lower().endswith(".csv"):
                objects.append({"key": item["Key"], "etag": item["ETag"].strip('"'), "size": item["Size"]})
    return objects


def ingest(client: Any, bucket: str, prefix: str, storage: ObjectStorage, dataset: str) -> IngestResult:
    """Snapshot the new objects under ``s3://bucket/prefix`` into ``dataset``."""
    datasets = DatasetStore(storage)
    previous = datasets.list_snapshots(dataset)
    seen = {(item.key, item.etag) for snapshot in previous for item in snapshot.objects}
    listed = list_raw_objects(client, bucket, prefix)
    new = [item for item in listed if (item["key"], item["etag"]) not in seen]
    if not new:
        return IngestResult(snapshot=None, new_objects=0, already_seen=len(listed))

    snapshot_id = snapshot_id_for([(item["key"], item["etag"]) for item in new])
    snapshot_prefix = DatasetStore.snapshot_prefix(dataset, snapshot_id)
    records: list[SourceObject] = []
    with tempfile.TemporaryDirectory(prefix="flywheel-ingest-") as scratch:
        for item in sorted(new, key=lambda entry: entry["key"]):
            local = Path(scratch) / hashlib.sha256(item["key"].encode()).hexdigest()
            # Pin the version we listed: if the object changed since, the ETag condition fails loudly.
            response = client.get_object(Bucket=bucket, Key=item["key"], IfMatch=f'"{item["etag"]}"')
            with local.open("wb") as handle:
                for chunk in response["Body"].iter_chunks(1 << 20):
                    handle.write(chunk)
            check_csv_header(local, f"s3://{bucket}/{item['key']}")
            relative = (
                item["key"][len(prefix) :].lstrip("/") if item["key"].startswith(prefix) else item["key"]
            )
            stored_as = f"raw/{relative}"
            storage.put_file(snapshot_prefix + stored_as, local)
            records.append(
                SourceObject(
                    bucket=bucket,
                    key=item["key"],
                    etag=item["etag"],
                    size=item["size"],
                    sha256=sha256_file(local),
                    stored_as=stored_as,
                )
            )
    content_hash = hashlib.sha256(
        "\n".join(f"{record.key}\t{record.sha256}" for record in records).encode()
    ).hexdigest()
    manifest = SnapshotManifest(
        dataset=dataset,
        snapshot_id=snapshot_id,
        source_uri=f"s3://{bucket}/{prefix}",
        objects=records,
        content_hash=content_hash,
        parent=previous[-1].snapshot_id if previous else None,
    )
    return IngestResult(
        snapshot=datasets.commit(manifest), new_objects=len(new), already_seen=len(listed) - len(new)
    )
