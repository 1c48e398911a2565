"""TF Serving's gRPC services (PredictionService, ModelService) over the servable manager."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from serving.backends.tfserving.runtime.manager import ServableManager, ServingError
from serving.backends.tfserving.runtime.monitoring import RuntimeMetrics

GRPC_CODES = {
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
}
_STATE_VALUES = get_model_status_pb2.ModelVersionStatus.State


def _spec(model_spec: Any) -> tuple[str, int | None, str | None]:
    version = model_spec.version.value if model_spec.HasField("version") else None
    return model_spec.name, version, model_spec.version_label or None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ServableManager, metrics: RuntimeMetrics | None = None) -> None:
        self.manager = manager
        self.metrics = metrics

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        import tensorflow as tf

        started = time.perf_counter()
        try:
            servable = self.manager.resolve(*_spec(request.model_spec))
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            signature_name = request.model_spec.signature_name or "serving_default"
            outputs = await asyncio.to_thread(self.manager.predict, servable, signature_name, inputs)
        except ServingError as error:
            if self.metrics is not None:
                elapsed = time.perf_counter() - started
                name = request.model_spec.name
                known = name in self.manager.loaded()
                self.metrics.record(name, error.code, "predict", "GRPC", elapsed, known)
            await context.abort(GRPC_CODES.get(error.code, grpc.StatusCode.INTERNAL), error.message)
        if self.metrics is not None:
            self.metrics.record(servable.name, "OK", "predict", "GRPC", time.perf_counter() - started)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if list(request.metadata_field) != ["signature_def"]:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is the only one supported"
            )
        try:
            servable = self.manager.resolve(*_spec(request.model_spec))
        except ServingError as error:
            await context.abort(GRPC_CODES.get(error.code, grpc.StatusCode.INTERNAL), error.message)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        packed = any_pb2.Any()
        packed.Pack(signature_map)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].CopyFrom(packed)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ServableManager, on_reload: Callable[[Any], None]) -> None:
        self.manager = manager
        self.on_reload = on_reload

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            rows = self.manager.status(*_spec(request.model_spec))
        except ServingError as error:
            await context.abort(GRPC_CODES.get(error.code, grpc.StatusCode.INTERNAL), error.message)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, message in rows:
            status = response.model_version_status.add()
            status.version = version
            status.state = _STATE_VALUES.Value(state)
            status.status.error_code = 0 if not message else 2
            status.status.error_message = message
        return response

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            await asyncio.to_thread(self.manager.apply_config, request.config)
            self.on_reload(request.config)
            response.status.CopyFrom(status_pb2.StatusProto(error_code=0))
        except ServingError as error:
            response.status.CopyFrom(status_pb2.StatusProto(error_code=3, error_message=error.message))
        return response
