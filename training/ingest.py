"""Incremental S3 ingest: snapshot only the raw objects no earlier snapshot took.

Objects are identified by (key, ETag), so a rewritten object counts as new and an unchanged one
never does. Each new object is checked by the task (the forecaster checks a CSV header) before anything is
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
from tasks.base import RawDataError, Task

#: A raw object that cannot be ingested; the task's check names it and says why.
IngestError = RawDataError


@dataclass(frozen=True)
class IngestResult:
    snapshot: SnapshotManifest | None
    new_objects: int
    already_seen: int

    @property
    def skipped(self) -> bool:
        return self.snapshot is None


#: Where labelled captured requests land as raw data (``training/labelled_captures.py``), per model.
LABELLED_CAPTURES_FOLDER = "labelled-captures/"


def snapshot_id_for(objects: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256("\n".join(f"{key}\t{etag}" for key, etag in sorted(objects)).encode())
    return f"snap-{digest.hexdigest()[:16]}"


def list_raw_objects(
    client: Any, bucket: str, prefix: str, suffixes: tuple[str, ...] = (".csv",)
) -> list[dict[str, Any]]:
    """The objects under ``s3://bucket/prefix`` whose key ends with one of ``suffixes``."""
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].lower().endswith(suffixes):
                objects.append({"key": item["Key"], "etag": item["ETag"].strip('"'), "size": item["Size"]})
    return objects


def ingest(
    client: Any, bucket: str, prefix: str, storage: ObjectStorage, dataset: str, task: Task
) -> IngestResult:
    """Snapshot the new objects of ``task``'s raw kinds under ``s3://bucket/prefix`` into ``dataset``."""
    datasets = DatasetStore(storage)
    previous = datasets.list_snapshots(dataset)
    seen = {(item.key, item.etag) for snapshot in previous for item in snapshot.objects}
    # Another model's labelled traffic is its own, not this dataset's raw data.
    own = f"{LABELLED_CAPTURES_FOLDER}{dataset}/"
    listed = [
        item for item in list_raw_objects(client, bucket, prefix, task.raw_suffixes)
        if LABELLED_CAPTURES_FOLDER not in item["key"] or own in item["key"]
    ]  # fmt: skip
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
            task.check_raw(local, f"s3://{bucket}/{item['key']}")
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
