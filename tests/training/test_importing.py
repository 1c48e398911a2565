"""`flywheel models import`: each accepted format is packaged, smoke-tested on real servers and
published as `imported`; every refusal says why, before anything becomes visible."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.manifest import Signature, TensorSpec
from tests.support import REPO_ROOT
from training.exports import export_savedmodel
from training.importing import source_digest

pytestmark = pytest.mark.timeout(900)

GOOD_HANDLER = """
import json
import torch


class Handler:
    def initialize(self, context):
        import os
        folder = context.system_properties.get("model_dir")
        self.model = torch.jit.load(os.path.join(folder, context.manifest["model"]["serializedFile"]))

    def handle(self, data, context):
        answers = []
        for row in data:
            body = row.get("body") or row.get("data")
            body = json.loads(body) if isinstance(body, (bytes, str)) else body
            with torch.no_grad():
                answers.append({"predictions": self.model(torch.tensor(body["instances"])).tolist()})
        return answers


_service = Handler()


def handle(data, context):
    if not hasattr(_service, "model"):
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)
"""
#: A handler in TorchServe's default style: it answers a bare list, not {"predictions": [...]}.
FOREIGN_HANDLER = GOOD_HANDLER.replace(
    'answers.append({"predictions": self.model(torch.tensor(body["instances"])).tolist()})',
    'answers.append(self.model(torch.tensor(body["instances"])).tolist())',
)


class TinyImages(torch.nn.Module):
    """A stand-in classifier trained elsewhere: [N, 28, 28] grey levels -> 10 probabilities."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(images.flatten(1)[:, :10] / 255.0, dim=-1)


class Scaled(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(features @ torch.ones(4, 3) * 0.1, dim=-1)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("byom")
    torchscript = folder / "scaled.pt"
    torch.jit.trace(Scaled(), torch.zeros(2, 4)).save(str(torchscript))
    torch.jit.trace(TinyImages(), torch.zeros(2, 28, 28)).save(str(folder / "tiny.pt"))
    keras = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    signature = Signature(
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 2])],
    )
    export_savedmodel(keras, signature, folder / "savedmodel")
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    for name, handler in (("own", GOOD_HANDLER), ("foreign", FOREIGN_HANDLER)):
        (folder / f"{name}_handler.py").write_text(handler)
        subprocess.run(
            [str(archiver), "--model-name", name, "--version", "1.0", "--serialized-file", str(torchscript),
             "--handler", str(folder / f"{name}_handler.py"), "--export-path", str(folder), "--force"],
            check=True,
        )  # fmt: skip
    (folder / "model.onnx").write_bytes(b"\x08\x07")
    (folder / "broken.pt").write_bytes(b"PK\x03\x04 truncated")
    with zipfile.ZipFile(folder / "stranger.zip", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return {
        "torchscript": torchscript,
        "savedmodel": folder / "savedmodel",
        "mar": folder / "own.mar",
        "images": folder / "tiny.pt",
        "foreign_mar": folder / "foreign.mar",
        "onnx": folder / "model.onnx",
        "broken": folder / "broken.pt",
        "stranger": folder / "stranger.zip",
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("import-home")
    # A folder store: importing needs no S3 endpoint (the default store is s3:// on the stack's).
    return {
        "FLYWHEEL_HOME": str(folder),
        "FLYWHEEL_CONFIG": str(folder / "absent.toml"),
        "FLYWHEEL_STORE_URI": "file://var/store",
    }


def run_import(home: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "flywheel", "models", "import", *args, "--json"],
        env={**os.environ, **home},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def store_of(home: dict[str, str]) -> ModelStore:
    settings = FlywheelSettings(home=Path(home["FLYWHEEL_HOME"]), store_uri=home["FLYWHEEL_STORE_URI"])
    return ModelStore.open(settings.resolve_store_uri())


def imported(home: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_import(home, *args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    manifest: dict[str, Any] = json.loads(result.stdout)
    return manifest


def test_torchscript_serves_on_torchserve_and_triton(sources: dict[str, Path], home: dict[str, str]) -> None:
    manifest = imported(
        home, "scaled", str(sources["torchscript"]), "--input", "features:FP32:-1,4",
        "--output", "probabilities:FP32:-1,3", "--classes", "low,mid,high",
    )  # fmt: skip
    assert manifest["backends"] == ["triton", "torchserve"] and manifest["framework"] == "pytorch"
    assert (
        manifest["lineage"]["origin"] == "imported" and manifest["lineage"]["source_format"] == "torchscript"
    )
    assert manifest["lineage"]["source_sha256"] == source_digest(sources["torchscript"])
    assert manifest["output"] == {"kind": "classification", "class_names": ["low", "mid", "high"]}
    assert manifest["signature"]["inputs"][0] == {
        "name": "features", "datatype": "FP32", "shape": [-1, 4], "allow_non_finite": False,
    }  # fmt: skip
    paths = {artifact["path"] for artifact in manifest["artifacts"]}
    assert {"torchserve/scaled.mar", "triton/scaled/config.pbtxt", "triton/scaled/1/model.pt"} <= paths


def test_a_savedmodel_brings_its_own_signature(sources: dict[str, Path], home: dict[str, str]) -> None:
    manifest = imported(home, "dense", str(sources["savedmodel"]))
    assert manifest["backends"] == ["tfserving"] and manifest["framework"] == "tensorflow"
    assert [(s["name"], s["shape"]) for s in manifest["signature"]["inputs"]] == [("x", [-1, 4])]
    assert [(s["name"], s["shape"]) for s in manifest["signature"]["outputs"]] == [("y", [-1, 2])]
    assert manifest["lineage"]["source_sha256"] == source_digest(sources["savedmodel"])
    assert "savedmodel/1/saved_model.pb" in {artifact["path"] for artifact in manifest["artifacts"]}


def test_a_mar_with_its_own_handler_serves_on_torchserve(
    sources: dict[str, Path], home: dict[str, str]
) -> None:
    manifest = imported(
        home, "handled", str(sources["mar"]), "--input", "x:FP32:-1,4", "--output", "y:FP32:-1,3"
    )
    assert manifest["backends"] == ["torchserve"] and manifest["lineage"]["source_format"] == "mar"
    assert store_of(home).list_versions("handled") == [1]


def test_an_import_for_a_task_takes_its_signature_and_classes(
    sources: dict[str, Path], home: dict[str, str]
) -> None:
    manifest = imported(home, "outside-shoes", str(sources["images"]), "--task", "fashion_mnist")
    assert manifest["task"] == "fashion_mnist" and manifest["output"]["kind"] == "classification"
    assert len(manifest["output"]["class_names"]) == 10
    assert manifest["signature"]["inputs"][0]["shape"] == [-1, 28, 28]
    assert store_of(home).registration("outside-shoes")["task"] == "fashion_mnist"  # type: ignore[index]
    # The next version of a registered model is held to its task's signature without --task.
    refused = run_import(home, "outside-shoes", str(sources["torchscript"]), "--input", "x:FP32:-1,4",
                         "--output", "y:FP32:-1,3")  # fmt: skip
    assert refused.returncode == 1 and "is not task fashion_mnist's" in json.loads(refused.stdout)["error"]


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        ("onnx", ("--input", "x:FP32:-1,4", "--output", "y:FP32:-1,3"), "ONNX cannot be served here"),
        ("torchscript", (), "carries no signature; give it with --input"),
        (
            "broken",
            ("--input", "x:FP32:-1,4", "--output", "y:FP32:-1,3"),
            "not a model file Flywheel recognises",
        ),
        ("stranger", ("--input", "x:FP32:-1,4", "--output", "y:FP32:-1,3"), "neither TorchScript"),
        ("torchscript", ("--input", "x:FP99:-1,4", "--output", "y:FP32:-1,3"), "unknown datatype 'FP99'"),
        (
            "torchscript",
            ("--input", "x:FP32:4", "--output", "y:FP32:-1,3"),
            "the first dimension is the batch",
        ),
        (
            "torchscript",
            ("--input", "x:FP32:-1,4", "--output", "y:FP32:-1,3", "--classes", "a,b"),
            "names 2 classes",
        ),
        ("savedmodel", ("--input", "images:FP32:-1,4"), "disagree with the SavedModel's own signature"),
    ],
)
def test_refusals_say_why_and_publish_nothing(
    sources: dict[str, Path], home: dict[str, str], source: str, args: tuple[str, ...], message: str
) -> None:
    result = run_import(home, "refused", str(sources[source]), *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in json.loads(result.stdout)["error"]
    assert store_of(home).list_versions("refused") == []


def test_the_foreign_handler_differs_only_in_its_answer() -> None:
    assert FOREIGN_HANDLER != GOOD_HANDLER
    compile(FOREIGN_HANDLER, "foreign_handler.py", "exec")  # it loads; only its answer differs


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        # The model takes 4 features; the command line claims 5: the server's own error comes back.
        ("torchscript", ("--input", "x:FP32:-1,5", "--output", "y:FP32:-1,3"), "could not serve scaled.pt"),
        # The model answers 3 columns; the signature claims 7.
        ("torchscript", ("--input", "x:FP32:-1,4", "--output", "y:FP32:-1,7"), "the signature says [-1, 7]"),
        ("foreign_mar", ("--input", "x:FP32:-1,4", "--output", "y:FP32:-1,3"), 'not {"predictions": [...]}'),
    ],
)
def test_a_model_that_does_not_match_its_signature_fails_at_import(
    sources: dict[str, Path], home: dict[str, str], source: str, args: tuple[str, ...], message: str
) -> None:
    result = run_import(home, "mismatched", str(sources[source]), *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in json.loads(result.stdout)["error"], json.loads(result.stdout)["error"]
    assert store_of(home).list_versions("mismatched") == []
