"""Where pipeline steps hand results to each other: ``runs/<model>/<run_id>/<step>/`` in the store.

Each step uploads its files, then ``_done.json`` last. A step whose marker exists is complete, so
a retried step can skip, and a step that died mid-upload (no marker) simply runs again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_store.backends.base import ObjectStorage
from model_store.errors import ObjectNotFoundError
from model_store.names import validate_name

DONE_MARKER = "_done.json"


class StepNotDoneError(LookupError):
    """A step's input is missing: the step that produces it has not completed for this run."""


class RunArea:
    def __init__(self, storage: ObjectStorage, model: str, run_id: str) -> None:
        self.storage = storage
        self.model = validate_name(model)
        self.run_id = validate_name(run_id, "run id")
        self.prefix = f"runs/{self.model}/{self.run_id}/"

    def result(self, step: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.storage.get(f"{self.prefix}{step}/{DONE_MARKER}").data))
        except ObjectNotFoundError:
            return None

    def upload(self, step: str, local_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.name.endswith(".crc") or path.name == "_SUCCESS":
                continue  # Hadoop's checksum and success files: noise outside Spark
            self.storage.put_file(f"{self.prefix}{step}/{path.relative_to(local_dir).as_posix()}", path)
        recorded = json.dumps(result, indent=2, default=str)
        self.storage.put(f"{self.prefix}{step}/{DONE_MARKER}", recorded.encode())
        # Return what a later call will read back, so a first run and a skipped re-run agree.
        return dict(json.loads(recorded))

    def upload_result(self, step: str, result: dict[str, Any]) -> dict[str, Any]:
        """A step that leaves no files, only its result (the replay's verdict, say)."""
        recorded = json.dumps(result, indent=2, default=str)
        self.storage.put(f"{self.prefix}{step}/{DONE_MARKER}", recorded.encode())
        return dict(json.loads(recorded))

    def download(self, step: str, destination: Path) -> Path:
        if self.result(step) is None:
            raise StepNotDoneError(
                f"step {step!r} has not completed for {self.model} run {self.run_id}; "
                f"run `flywheel pipeline {step.split('-')[0]}` first"
            )
        step_prefix = f"{self.prefix}{step}/"
        for key in self.storage.list_keys(step_prefix):
            relative = key[len(step_prefix) :]
            if relative != DONE_MARKER:
                self.storage.get_file(key, destination / relative)
        return destination
