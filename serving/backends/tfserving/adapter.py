"""TF Serving adapter: SavedModels in TF Serving's numbered layout, config reload over gRPC,
predictions over REST (default) or gRPC ``PredictionService``.

``load`` puts ``<base>/<model>/<version>/`` in place (verified, one rename), then sends the whole
``ModelServerConfig`` through ``ModelService/HandleReloadConfigRequest`` with a ``specific``
version policy naming the live versions, and waits until the version is AVAILABLE. The config
is also written to ``models.config`` so a restarted server comes back with the same versions.
The same calls work against the real ``tensorflow/serving`` image.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from flywheel.native_logs import quiet_import
from model_store import ModelStore
from serving.backends.base import (
    BackendUnavailableError,
    InvalidInputError,
    ModelNotLoadedError,
    Tensors,
    VersionNotLoadedError,
    json_ready,
    stage_artifacts,
)


class TFServingBackend:
    kind = "tfserving"

    def __init__(
        self,
        store: ModelStore,
        base_dir: Path,
        config_file: Path,
        rest_url: str,
        grpc_target: str,
        protocol: str = "rest",
        timeout_s: float = 10.0,
        load_timeout_s: float = 120.0,
    ) -> None:
        if protocol not in {"rest", "grpc"}:
            raise ValueError("protocol must be 'rest' or 'grpc'")
        self.store = store
        self.base_dir = base_dir
        self.config_file = config_file
        self.rest_url = rest_url.rstrip("/")
        self.grpc_target = grpc_target
        self.protocol = protocol
        self.metrics_url = ""  # the real server exposes /monitoring/prometheus/metrics when configured
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self._client = httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_keepalive_connections=32))
        self._lock = asyncio.Lock()
        self._grpc: Any = None

    # gRPC plumbing (imports TensorFlow's protos, so only when first needed) ----------------------
    def _channel(self) -> Any:
        # TF Serving's protos import TensorFlow, which logs its CPU features while it loads.
        quiet_import("tensorflow")
        if self._grpc is None:
            import grpc

            self._grpc = grpc.aio.insecure_channel(self.grpc_target)
        return self._grpc

    def _read_config(self) -> Any:
        quiet_import("tensorflow")  # the config protos below import it
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2

        config = model_server_config_pb2.ModelServerConfig()
        if self.config_file.exists():
            text_format.Parse(self.config_file.read_text(), config)
        else:
            config.model_config_list.SetInParent()
        return config

    async def _reload(self, model: str, versions: list[int]) -> None:
        channel = self._channel()
        import grpc
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        config = self._read_config()
        entries = config.model_config_list.config
        existing = [entry for entry in entries if entry.name == model]
        if versions:
            entry = existing[0] if existing else entries.add(name=model)
            entry.base_path = str((self.base_dir / model).resolve())
            entry.model_platform = "tensorflow"
            entry.model_version_policy.specific.ClearField("versions")
            entry.model_version_policy.specific.versions.extend(sorted(versions))
        elif existing:
            entries.remove(existing[0])
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.config_file.with_suffix(".tmp")
        temporary.write_text(text_format.MessageToString(config))
        temporary.replace(self.config_file)
        request = model_management_pb2.ReloadConfigRequest(config=config)
        try:
            response = await model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                request, timeout=self.load_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise BackendUnavailableError(f"tfserving at {self.grpc_target}: {error.details()}") from None
        if response.status.error_code != 0:
            raise InvalidInputError(f"tfserving refused the config: {response.status.error_message}")

    async def _wait_for(self, model: str, version: int, available: bool) -> None:
        deadline = time.monotonic() + self.load_timeout_s
        while time.monotonic() < deadline:
            if (version in await self.loaded_versions(model)) == available:
                return
            await asyncio.sleep(0.1)
        state = "AVAILABLE" if available else "unloaded"
        raise BackendUnavailableError(
            f"tfserving: {model}:{version} not {state} after {self.load_timeout_s:.0f} s"
        )

    # Control plane ---------------------------------------------------------------------------
    async def load(self, model: str, version: int) -> None:
        async with self._lock:
            await asyncio.to_thread(
                stage_artifacts,
                self.store,
                model,
                version,
                f"savedmodel/{version}/",
                self.base_dir / model / str(version),
            )
            live = sorted(set(await self.loaded_versions(model)) | {version})
            await self._reload(model, live)
            await self._wait_for(model, version, available=True)

    async def unload(self, model: str, version: int) -> None:
        async with self._lock:
            live = sorted(set(await self.loaded_versions(model)) - {version})
            await self._reload(model, live)
            await self._wait_for(model, version, available=False)
            shutil.rmtree(self.base_dir / model / str(version), ignore_errors=True)

    async def loaded_versions(self, model: str) -> list[int]:
        try:
            response = await self._client.get(f"{self.rest_url}/v1/models/{model}")
        except httpx.HTTPError as error:
            raise BackendUnavailableError(f"tfserving at {self.rest_url} is unavailable: {error!r}") from None
        if response.status_code == 404:
            return []
        return sorted(
            int(row["version"])
            for row in response.json()["model_version_status"]
            if row["state"] == "AVAILABLE"
        )

    async def ready(self, model: str, version: int) -> bool:
        try:
            return version in await self.loaded_versions(model)
        except BackendUnavailableError:
            return False

    async def metadata(self, model: str, version: int) -> dict[str, Any]:
        try:
            response = await self._client.get(
                f"{self.rest_url}/v1/models/{model}/versions/{version}/metadata"
            )
        except httpx.HTTPError as error:
            raise BackendUnavailableError(f"tfserving at {self.rest_url} is unavailable: {error!r}") from None
        if response.status_code != 200:
            raise ModelNotLoadedError(response.json().get("error", response.text))
        return dict(response.json())

    # Data plane ------------------------------------------------------------------------------
    async def infer(self, model: str, version: int, inputs: Tensors) -> Tensors:
        if self.protocol == "grpc":
            return await self._infer_grpc(model, version, inputs)
        body = {
            "signature_name": "serving_default",
            "inputs": {k: json_ready(v) for k, v in inputs.items()},
        }
        try:
            response = await self._client.post(
                f"{self.rest_url}/v1/models/{model}/versions/{version}:predict",
                content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as error:
            raise BackendUnavailableError(f"tfserving at {self.rest_url} is unavailable: {error!r}") from None
        if response.status_code == 404:
            raise VersionNotLoadedError(model, version, await self.loaded_versions(model), "tfserving")
        if response.status_code != 200:
            message = (
                response.json().get("error", response.text) if response.content else response.reason_phrase
            )
            if response.status_code >= 500:
                raise BackendUnavailableError(f"tfserving: {message}")
            raise InvalidInputError(f"tfserving: {message}")
        outputs = orjson.loads(response.content)["outputs"]
        if not isinstance(outputs, dict):
            names = await self._output_names(model, version)
            outputs = {names[0]: outputs}
        return {name: np.asarray(value, dtype=np.float32) for name, value in outputs.items()}

    async def _output_names(self, model: str, version: int) -> list[str]:
        manifest = await asyncio.to_thread(self.store.get_manifest, model, version)
        return [spec.name for spec in manifest.signature.outputs]

    async def _infer_grpc(self, model: str, version: int, inputs: Tensors) -> Tensors:
        channel = self._channel()
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.version.value = version
        request.model_spec.signature_name = "serving_default"
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = await stub.Predict(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise VersionNotLoadedError(
                    model, version, await self.loaded_versions(model), "tfserving"
                ) from None
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInputError(f"tfserving: {error.details()}") from None
            raise BackendUnavailableError(f"tfserving at {self.grpc_target}: {error.details()}") from None
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._grpc is not None:
            await self._grpc.close()
