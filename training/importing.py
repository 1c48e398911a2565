"""Bring your own model: recognise a model file, find its signature, package it for every server
that can run it.

Accepted, and what serves them:

    format        recognised by                           packaged for
    torchscript   a TorchScript zip (.pt, .ts, ...)       TorchServe (Flywheel's handler), Triton
    savedmodel    a folder with saved_model.pb            TF Serving (the runtime here)
    mar           a TorchServe archive with its handler   TorchServe

ONNX is recognised and refused: the bundled ``tritonserver`` has only the Python backend (no
``onnxruntime`` backend), and ``onnxruntime`` is not in the serving environment. The signature
comes from the artifact where it carries one (a SavedModel's ``serving_default``) or from the
command line (``NAME:DATATYPE:DIMS``); an import with neither is refused. What is packaged is
smoke-tested on the servers before it is published (``training/smoke.py``).
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_store.manifest import OutputKind, OutputSpec, Signature, TensorSpec
from model_store.store import sha256_file
from serving.protocols.v2 import V2_TO_NUMPY

FORMATS = ("torchscript", "savedmodel", "mar")


def servers_for(kind: str) -> list[str]:
    """The registered server kinds that serve a file of this format (a .mar: TorchServe alone)."""
    from serving.backends.registry import plugins

    if kind == "mar":
        return ["torchserve"]
    return [plugin.kind for plugin in plugins() if kind in plugin.formats]


FRAMEWORKS = {"torchscript": "pytorch", "savedmodel": "tensorflow", "mar": "pytorch"}
_TF_DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "float16": "FP16"}


class ImportRefusedError(ValueError):
    """The model cannot be imported; the message says why and what would make it work."""


@dataclass
class ImportPlan:
    name: str
    source: Path
    format: str
    signature: Signature
    output: OutputSpec
    backends: list[str]
    source_sha256: str
    #: Relative artifact path (with ``{version}``) -> local file, ready for ``ModelStore.publish``.
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def framework(self) -> str:
        return FRAMEWORKS[self.format]


def parse_tensor(text: str, role: str) -> TensorSpec:
    """``NAME:DATATYPE:DIMS`` (``images:FP32:-1,64,64``) as a tensor spec; -1 marks the batch."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise ImportRefusedError(f"--{role} {text!r}: expected NAME:DATATYPE:DIMS, e.g. images:FP32:-1,64,64")
    name, datatype, dims = parts
    if datatype.upper() not in V2_TO_NUMPY:
        raise ImportRefusedError(
            f"--{role} {text!r}: unknown datatype {datatype!r}; use a KServe v2 name "
            f"({', '.join(sorted(V2_TO_NUMPY))})"
        )
    try:
        shape = [int(dim) for dim in dims.split(",")]
    except ValueError:
        raise ImportRefusedError(f"--{role} {text!r}: DIMS must be integers separated by commas") from None
    if not shape or shape[0] != -1 or any(dim == 0 or dim < -1 for dim in shape):
        raise ImportRefusedError(
            f"--{role} {text!r}: the first dimension is the batch (-1) and the others are positive"
        )
    return TensorSpec(name=name, datatype=datatype.upper(), shape=shape)


def source_digest(path: Path) -> str:
    """sha256 of a file; of a folder, of its files' relative paths and hashes in order."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\t{sha256_file(item)}\n".encode())
    return digest.hexdigest()


def detect_format(path: Path) -> str:
    if not path.exists():
        raise ImportRefusedError(f"{path} does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise ImportRefusedError(f"{path} is a folder without saved_model.pb: not a TensorFlow SavedModel")
    if path.suffix.lower() == ".onnx":
        raise ImportRefusedError(
            f"{path}: ONNX cannot be served here. The bundled tritonserver has only the Python backend "
            "(no onnxruntime backend) and onnxruntime is not in the serving environment. Export the model "
            "as TorchScript (torch.jit.trace) or as a SavedModel and import that; in production, the "
            "nvcr.io Triton image serves ONNX with its onnxruntime backend."
        )
    if not zipfile.is_zipfile(path):
        raise ImportRefusedError(
            f"{path}: not a model file Flywheel recognises (a TorchScript file, a TorchServe .mar, "
            "a SavedModel folder or an .onnx file); this one is not even a zip archive"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if "MAR-INF/MANIFEST.json" in names:
        return "mar"
    if any(name.endswith("/data.pkl") for name in names) and any("/code/" in name for name in names):
        return "torchscript"
    raise ImportRefusedError(
        f"{path}: a zip archive that is neither TorchScript (no code/ and data.pkl) nor a TorchServe .mar "
        "(no MAR-INF/MANIFEST.json)"
    )


def savedmodel_signature(path: Path) -> Signature:
    """The ``serving_default`` signature's tensors, as the manifest records them."""
    from flywheel.native_logs import quiet_import

    tf = quiet_import("tensorflow")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TensorFlow raises many kinds for a broken folder
        raise ImportRefusedError(f"{path}: TensorFlow cannot load this SavedModel: {error}") from None
    if "serving_default" not in loaded.signatures:
        raise ImportRefusedError(f"{path}: the SavedModel has no serving_default signature to serve")
    serving = loaded.signatures["serving_default"]

    def spec(name: str, tensor: Any) -> TensorSpec:
        dtype = tensor.dtype.name
        if dtype not in _TF_DATATYPES:
            raise ImportRefusedError(f"{path}: tensor {name!r} is {dtype}, which Flywheel does not serve")
        shape = [-1 if dim is None else int(dim) for dim in tensor.shape.as_list()]
        return TensorSpec(name=name, datatype=_TF_DATATYPES[dtype], shape=shape)

    return Signature(
        inputs=[spec(name, tensor) for name, tensor in serving.structured_input_signature[1].items()],
        outputs=[spec(name, tensor) for name, tensor in serving.structured_outputs.items()],
    )


def _check_torchscript(path: Path) -> None:
    import torch

    try:
        torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # torch raises RuntimeError and others for a broken archive
        raise ImportRefusedError(f"{path}: torch cannot load this TorchScript file: {error}") from None


def output_spec(signature: Signature, class_names: list[str] | None) -> OutputSpec:
    if not class_names:
        return OutputSpec(kind=OutputKind.REGRESSION)
    width = signature.outputs[0].shape[-1]
    if len(class_names) != width:
        raise ImportRefusedError(
            f"--classes names {len(class_names)} classes but the output {signature.outputs[0].name!r} "
            f"has {width} columns"
        )
    return OutputSpec(kind=OutputKind.CLASSIFICATION, class_names=class_names)


def _matching(signature: Signature, task: Any) -> None:
    """Refuse a signature that differs from the task's: its versions must answer the same calls."""
    expected = task.signature()

    def view(specs: list[TensorSpec]) -> list[tuple[str, str, list[int]]]:
        return [(spec.name, spec.datatype, spec.shape) for spec in specs]

    if view(signature.inputs) != view(expected.inputs) or view(signature.outputs) != view(expected.outputs):
        raise ImportRefusedError(
            f"the signature {view(signature.inputs)} -> {view(signature.outputs)} is not task "
            f"{task.name}'s {view(expected.inputs)} -> {view(expected.outputs)}; a model of a task "
            "must answer the same calls as the task's own versions"
        )


def plan_import(
    name: str,
    source: Path,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    class_names: list[str] | None,
    workdir: Path,
    max_batch_size: int = 256,
    task: Any = None,
) -> ImportPlan:
    """Recognise ``source``, settle its signature and package it under ``workdir``.

    With ``task`` (a registered :class:`tasks.base.Task`), a file without a signature takes the
    task's, and the model's signature and output kind must be the task's.
    """
    from serving.backends.registry import PackageInputs, get_plugin

    kind = detect_format(source)
    if task is not None and kind != "savedmodel" and not inputs and not outputs:
        inputs, outputs = task.signature().inputs, task.signature().outputs
    if kind == "savedmodel":
        signature = savedmodel_signature(source)
        if inputs or outputs:
            given = Signature(inputs=inputs or signature.inputs, outputs=outputs or signature.outputs)
            if [(s.name, s.datatype) for s in given.inputs + given.outputs] != [
                (s.name, s.datatype) for s in signature.inputs + signature.outputs
            ]:
                raise ImportRefusedError(
                    f"{source}: --input/--output {[s.protocol_view() for s in given.inputs + given.outputs]} "
                    f"disagree with the SavedModel's own signature "
                    f"{[s.protocol_view() for s in signature.inputs + signature.outputs]}"
                )
            signature = given  # names and types agree; the command line may pin fixed dimensions
    else:
        if not inputs or not outputs:
            raise ImportRefusedError(
                f"{source}: a {kind} file carries no signature; give it with --input NAME:DATATYPE:DIMS "
                "and --output NAME:DATATYPE:DIMS "
                "(e.g. --input images:FP32:-1,64,64 --output scores:FP32:-1,5)"
            )
        signature = Signature(inputs=inputs, outputs=outputs)
    if len(signature.inputs) != 1 or len(signature.outputs) != 1:
        raise ImportRefusedError(
            f"{source}: Flywheel serves models with one input and one output tensor; this one has "
            f"{len(signature.inputs)} and {len(signature.outputs)}"
        )
    signature.max_batch_size = max_batch_size
    if task is not None:
        _matching(signature, task)
        if class_names:
            raise ImportRefusedError(f"--classes and --task: the classes are task {task.name}'s")
    plan = ImportPlan(
        name=name,
        source=source,
        format=kind,
        signature=signature,
        output=task.output if task is not None else output_spec(signature, class_names),
        backends=servers_for(kind),
        source_sha256=source_digest(source),
    )
    package = workdir / "package"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    signature_file = package / "signature.json"
    signature_file.write_text(signature.model_dump_json(indent=2))
    plan.artifacts["signature.json"] = signature_file
    if kind == "torchscript":
        _check_torchscript(source)
        torchscript = package / "torchscript" / "model.pt"
        torchscript.parent.mkdir()
        shutil.copy(source, torchscript)
        plan.artifacts["torchscript/model.pt"] = torchscript
        # Each server that serves TorchScript packages it its own way (serving/backends/<kind>/).
        exports = PackageInputs(name, signature_file, torchscript=torchscript)
        for server in plan.backends:
            for written in get_plugin(server).package(exports, package):
                plan.artifacts[written] = package / written
    elif kind == "mar":
        plan.artifacts[f"torchserve/{name}.mar"] = source
    else:
        for item in sorted(p for p in source.rglob("*") if p.is_file()):
            plan.artifacts[f"savedmodel/{{version}}/{item.relative_to(source).as_posix()}"] = item
    return plan
