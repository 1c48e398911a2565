"""The version manifest: the record whose existence *is* the version.

Written last, with a create-if-absent put, after every artifact it lists is stored. Its schema is
the contract every loader and the gateway read; fields only ever get added.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MANIFEST_SCHEMA_VERSION = 1


#: A model-server kind the artifacts are packaged for. The kinds themselves are listed by
#: ``serving.backends.registry`` (the store sits below serving and only checks the name's form).
ServingBackend = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class TensorSpec(BaseModel):
    """One named input or output tensor. ``-1`` in a shape is a variable dimension (the batch)."""

    name: str
    datatype: str = Field(description="KServe v2 datatype name, for example FP32 or INT64.")
    shape: list[int]
    allow_non_finite: bool = Field(
        default=False,
        description="A floating-point input that may carry NaN or infinity (say, as a missing-value "
        "marker). Off by default: the gateway refuses such inputs with 400.",
    )

    def protocol_view(self) -> dict[str, object]:
        """The tensor as KServe v2 metadata describes it: name, datatype, shape."""
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


class Signature(BaseModel):
    """The model's one input/output signature, shared by every backend it is packaged for."""

    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="The most rows one request may carry (Triton's max_batch_size for the packaged "
        "model). The gateway refuses larger batches with 400 and advertises it in model metadata.",
    )


class OutputKind(StrEnum):
    """What a model's first output means; the gateway turns feedback labels into rewards by it."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"


class OutputSpec(BaseModel):
    """How to read the model's output: a value per row, or probabilities over named classes."""

    kind: OutputKind = OutputKind.REGRESSION
    class_names: list[str] = Field(
        default_factory=list, description="Classification only: the class of each output column, in order."
    )


class ArtifactRecord(BaseModel):
    """A stored file, with what a loader must verify before trusting it."""

    path: str = Field(description="Path relative to the version folder.")
    sha256: str
    size: int


class Lineage(BaseModel):
    """Where a version came from: enough to reproduce it or to explain it."""

    origin: str = Field(
        default="pipeline",
        description="pipeline (trained by Flywheel's loop) or imported (`flywheel models import`).",
    )
    source_file: str | None = Field(default=None, description="Imported: the file or folder it came from.")
    source_sha256: str | None = Field(
        default=None, description="Imported: sha256 of the source file (of a folder: of its files' hashes)."
    )
    source_format: str | None = Field(default=None, description="Imported: torchscript, savedmodel or mar.")

    run_id: str | None = Field(
        default=None, description="The pipeline run that produced it (one version per run)."
    )
    dataset_snapshot: str | None = None
    dataset_hash: str | None = None
    source_objects: list[str] = Field(default_factory=list)
    capture_batches: list[str] = Field(
        default_factory=list, description="Captured-request batches whose labelled requests it trained on."
    )
    label_files: list[str] = Field(
        default_factory=list, description="The label files that labelled those captured requests."
    )
    git_sha: str | None = None
    git_dirty: bool | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    tuning: dict[str, Any] | None = Field(
        default=None,
        description="How the parameters were searched: best_params, trials, pruned, seed, budget, "
        "search_space, the validation metric's best and default values. None: no search ran.",
    )
    packages: dict[str, str] = Field(default_factory=dict)


class GateResult(BaseModel):
    """The evaluation gate's verdict against the champion this version was compared with."""

    passed: bool
    metric: str | None = None
    champion_version: int | None = None
    candidate_value: float | None = None
    champion_value: float | None = None
    reasons: list[str] = Field(default_factory=list)
    replay: dict[str, Any] | None = Field(
        default=None, description="The replay of the champion's captured traffic before the canary."
    )


class Manifest(BaseModel):
    """Everything known about one published version."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    version: int
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    framework: str
    task: str | None = Field(
        default=None, description="The task plug-in that trained it (tasks/); None for an imported model."
    )
    output: OutputSpec = Field(default_factory=OutputSpec)
    backends: list[ServingBackend] = Field(default_factory=list)
    signature: Signature = Field(default_factory=Signature)
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    lineage: Lineage = Field(default_factory=Lineage)
    metrics: dict[str, float] = Field(default_factory=dict)
    gate: GateResult | None = None

    def artifact(self, path: str) -> ArtifactRecord:
        for record in self.artifacts:
            if record.path == path:
                return record
        raise KeyError(f"{self.name}:{self.version} has no artifact {path!r}")
