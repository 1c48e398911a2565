"""Smoke-test a packaged model on real servers before it becomes a version.

The package is published into a private staging store; each server it is packaged for starts on
free ports in a scratch folder (the same service definitions ``flywheel up`` uses), loads it
through the gateway's own backend adapter, and answers one inference on example inputs built from
the signature. The answer must have the signature's output name and shape and be finite. Any
refusal carries the server's own message. Nothing touches the real store or the running stack.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ProcessRecord, is_running, start_process, stop_process, tail
from flywheel.stack.sockets import free_port
from model_store import ModelStore
from model_store.manifest import Manifest
from serving.protocols.examples import example_inputs
from training.importing import ImportPlan, ImportRefusedError

#: Seconds to start here, roughly: Triton ~5, the TF runtime ~10, TorchServe (Java) ~25.
_START_ORDER = ["triton", "tfserving", "torchserve"]
_PORTS = {
    "triton": ("triton_http_port", "triton_grpc_port", "triton_metrics_port"),
    "torchserve": (
        "torchserve_inference_port",
        "torchserve_management_port",
        "torchserve_metrics_port",
        "torchserve_grpc_inference_port",
        "torchserve_grpc_management_port",
    ),
    "tfserving": ("tfserving_grpc_port", "tfserving_rest_port"),
}


def _start(
    settings: FlywheelSettings, kinds: list[str], workdir: Path, timeout_s: float
) -> dict[str, ProcessRecord]:
    from flywheel.stack.services import model_server_services

    records: dict[str, ProcessRecord] = {}
    specs = [spec for spec in model_server_services(settings) if spec.name in kinds]
    for spec in specs:
        if spec.prepare:
            spec.prepare()
        records[spec.name] = start_process(spec, workdir / "run", workdir / "log")
    deadline = time.monotonic() + timeout_s
    try:
        for spec in specs:
            record = records[spec.name]
            while (problem := spec.probe()) is not None:
                if not is_running(record) or time.monotonic() > deadline:
                    raise ImportRefusedError(
                        f"the {spec.name} smoke-test server did not start ({problem}):\n"
                        + tail(Path(record.log), 20)
                    )
                time.sleep(0.5)  # polling a starting server's health with a deadline
    except BaseException:
        for started in records.values():
            stop_process(started, 30)
        raise
    return records


async def _infer_once(
    kind: str, settings: FlywheelSettings, store: ModelStore, manifest: Manifest
) -> list[int]:
    from serving.backends.factory import build_backend

    backend = build_backend(kind, settings, store)
    try:
        await backend.load(manifest.name, manifest.version)
        inputs = example_inputs([spec.protocol_view() for spec in manifest.signature.inputs], rows=2)
        outputs = await backend.infer(manifest.name, manifest.version, inputs)
    finally:
        await backend.aclose()
    expected = manifest.signature.outputs[0]
    if expected.name not in outputs:
        raise ValueError(f"it answered {sorted(outputs)}, the signature names the output {expected.name!r}")
    answer = np.asarray(outputs[expected.name])
    fixed = [dim for dim in expected.shape[1:] if dim > 0]
    if answer.shape[0] != 2 or (fixed and int(np.prod(answer.shape[1:])) != int(np.prod(fixed))):
        raise ValueError(
            f"for 2 rows it answered shape {list(answer.shape)}; the signature says {expected.shape}"
        )
    if not np.all(np.isfinite(answer)):
        raise ValueError("it answered non-finite values (NaN or infinity) for ordinary inputs")
    return list(answer.shape)


def smoke_test(
    plan: ImportPlan,
    settings: FlywheelSettings,
    progress: Callable[[str], None] = lambda message: None,
    start_timeout_s: float = 240,
) -> dict[str, list[int]]:
    """One inference on every server ``plan`` is packaged for; returns each answer's shape."""
    with tempfile.TemporaryDirectory(prefix="flywheel-smoke-") as scratch:
        workdir = Path(scratch)
        store = ModelStore.open(f"file://{workdir / 'store'}")
        manifest = store.publish(
            plan.name,
            plan.artifacts,
            framework=plan.framework,
            backends=plan.backends,
            signature=plan.signature,
            output=plan.output,
        )
        # One server at a time, the quickest to start first: a model that fails, fails early.
        kinds = sorted((str(backend) for backend in plan.backends), key=_START_ORDER.index)
        shapes: dict[str, list[int]] = {}
        for kind in kinds:
            ports = {name: free_port() for name in _PORTS[kind]}
            private = settings.model_copy(update={**ports, "var_dir": workdir / "var", "host": "127.0.0.1"})
            progress(f"starting {kind} to smoke-test {plan.name}")
            records = _start(private, [kind], workdir, start_timeout_s)
            try:
                progress(f"one inference on {kind}")
                try:
                    shapes[kind] = asyncio.run(_infer_once(kind, private, store, manifest))
                except Exception as error:  # the server's message, whatever the failure
                    raise ImportRefusedError(f"{kind} could not serve {plan.source.name}: {error}") from None
            finally:
                for record in records.values():
                    stop_process(record, 30)
        return shapes
