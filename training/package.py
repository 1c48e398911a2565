"""Packaging: one trained model, every registered server's native format, one shared signature.

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
from pathlib import Path

from model_store.manifest import Signature
from serving.backends.registry import PackageInputs, plugins
from serving.backends.torchserve.packaging import PackagingError, build_mar
from serving.backends.triton.packaging import triton_config

# Kept importable from here: the pipeline's callers name them.
__all__ = ["PackagingError", "build_mar", "package_model", "packaged_backends", "triton_config"]


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
    # Every registered server kind packages what it serves from the exports (serving/backends/).
    inputs = PackageInputs(
        name, signature_file, torchscript=torchscript, savedmodel=tensorflow_dir / "savedmodel"
    )
    for plugin in plugins():
        plugin.package(inputs, output)

    profile = json.loads((preprocess_dir / "profile.json").read_text())
    # The task's output references: "prediction" (and a classifier's "confidence").
    profile.update(json.loads((torch_dir / "prediction_profile.json").read_text()))
    (output / "profile.json").write_text(json.dumps(profile, indent=2))
    return output


def packaged_backends() -> list[str]:
    """The server kinds a trained model is packaged for: every kind serving one of its exports."""
    exports = {"torchscript", "savedmodel"}
    return [plugin.kind for plugin in plugins() if exports & set(plugin.formats)]
