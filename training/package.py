"""Packaging: one trained model, three servers' native formats, one shared signature.

Layout produced (paths relative to the version folder; ``{version}`` is filled in at publish):

    torchscript/model.pt                     TorchScript, for the gate and for libtorch
    torchserve/<name>.mar                    torch-model-archiver, batch-aware handler
    triton/<name>/config.pbtxt               Python backend, dynamic batching
    triton/<name>/{version}/model.py         runs model.pt with torch inside the backend
    triton/<name>/{version}/model.pt         the same TorchScript
    savedmodel/{version}/...                 TF Serving layout, serving_default signature
    profile.json                             drift reference: features and predictions
    normalization.json, signature.json       the contract, as data
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from model_store.manifest import Signature, TensorSpec

HANDLERS = Path(__file__).parent / "serving_handlers"
_TRITON_DATATYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32"}


class PackagingError(RuntimeError):
    """A packaging tool failed; the message carries its output."""


_DEFAULT_TRITON_MAX_BATCH = 256


def triton_config(
    name: str, signature: Signature, max_batch_size: int | None = None, device: str = "cpu"
) -> str:
    """``config.pbtxt`` for the Python backend; the batch axis (-1) is implicit in Triton."""

    def tensors(specs: list[TensorSpec]) -> str:
        rendered = []
        for spec in specs:
            dims = ", ".join(str(d) for d in spec.shape[1:])
            rendered.append(
                f'  {{ name: "{spec.name}" data_type: {_TRITON_DATATYPES[spec.datatype]} dims: [ {dims} ] }}'
            )
        return ",\n".join(rendered)

    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    # One limit for the gateway (it refuses larger batches early) and for Triton.
    max_batch_size = max_batch_size or signature.max_batch_size or _DEFAULT_TRITON_MAX_BATCH
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{tensors(signature.inputs)}\n]\noutput [\n{tensors(signature.outputs)}\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        f"instance_group [ {{ kind: {kind} count: 1 }} ]\n"
    )


def build_mar(name: str, torchscript: Path, signature_file: Path, export_dir: Path) -> Path:
    """Run the real ``torch-model-archiver`` with Flywheel's batch-aware handler."""
    export_dir.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    result = subprocess.run(
        [
            str(archiver),
            "--model-name", name,
            "--version", "1.0",
            "--serialized-file", str(torchscript),
            "--handler", str(HANDLERS / "torchserve_handler.py"),
            "--extra-files", str(signature_file),
            "--export-path", str(export_dir),
            "--force",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        raise PackagingError(f"torch-model-archiver failed: {result.stderr.strip() or result.stdout.strip()}")
    return export_dir / f"{name}.mar"


def package_model(
    name: str, signature: Signature, torch_dir: Path, tensorflow_dir: Path, preprocess_dir: Path, output: Path
) -> Path:
    """Assemble every artifact under ``output`` from the trainers' and preprocessing's outputs."""
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    signature_file = output / "signature.json"
    signature_file.write_text(signature.model_dump_json(indent=2))
    shutil.copy(preprocess_dir / "normalization.json", output / "normalization.json")

    torchscript = output / "torchscript" / "model.pt"
    torchscript.parent.mkdir(parents=True)
    shutil.copy(torch_dir / "model.pt", torchscript)
    build_mar(name, torchscript, signature_file, output / "torchserve")

    triton_dir = output / "triton" / name
    (triton_dir / "{version}").mkdir(parents=True)
    (triton_dir / "config.pbtxt").write_text(triton_config(name, signature))
    shutil.copy(HANDLERS / "triton_model.py", triton_dir / "{version}" / "model.py")
    shutil.copy(torchscript, triton_dir / "{version}" / "model.pt")

    shutil.copytree(tensorflow_dir / "savedmodel", output / "savedmodel" / "{version}")

    profile = json.loads((preprocess_dir / "profile.json").read_text())
    # The task's output references: "prediction" (and a classifier's "confidence").
    profile.update(json.loads((torch_dir / "prediction_profile.json").read_text()))
    (output / "profile.json").write_text(json.dumps(profile, indent=2))
    return output
