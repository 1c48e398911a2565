"""The gateway's gRPC skin: KServe v2 ``inference.GRPCInferenceService`` over ``grpc.aio``.

Uses the generated stubs that ship in ``tritonclient``, so ``tritonclient.grpc`` talks to the
gateway exactly as it talks to Triton. Tensors arrive as ``raw_input_contents`` (what
``tritonclient`` sends) or typed ``contents``; answers use raw contents. The serving variant
and request id come back as response parameters and as initial metadata. Methods this
gateway does not implement (shared memory, repository control) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from model_store.errors import InvalidNameError
from model_store.names import validate_version
from serving.backends.base import BackendError, InvalidInputError, Tensors
from serving.gateway.core import GatewayCore
from serving.protocols.v2 import V2_TO_NUMPY, check_shape, datatype_of

GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _version(raw: str) -> int | None:
    return validate_version(raw) if raw else None


def decode_inputs(request: Any) -> Tensors:
    """Named arrays from a ModelInferRequest; malformed tensors raise InvalidInputError."""
    if not request.inputs:
        raise InvalidInputError("request has no inputs")
    use_raw = len(request.raw_input_contents) > 0
    if use_raw and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidInputError(
            f"{len(request.inputs)} inputs but {len(request.raw_input_contents)} raw_input_contents"
        )
    tensors: Tensors = {}
    for index, tensor in enumerate(request.inputs):
        dtype = V2_TO_NUMPY.get(tensor.datatype)
        if dtype is None:
            raise InvalidInputError(f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported")
        shape = check_shape(tensor.name, tuple(int(dim) for dim in tensor.shape))
        elements = math.prod(shape)
        if use_raw and tensor.HasField("contents"):
            raise InvalidInputError(
                f"input {tensor.name!r} has both typed contents and raw_input_contents; "
                "the protocol allows one or the other"
            )
        if use_raw:
            raw = request.raw_input_contents[index]
            if len(raw) != elements * dtype.itemsize:
                raise InvalidInputError(
                    f"input {tensor.name!r}: {len(raw)} bytes do not fill "
                    f"shape {list(shape)} of {tensor.datatype}"
                )
            array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        else:
            field = _CONTENTS_FIELD.get(tensor.datatype)
            values = getattr(tensor.contents, field) if field else []
            if len(values) != elements:
                raise InvalidInputError(
                    f"input {tensor.name!r}: {len(values)} values do not fill shape {list(shape)}"
                )
            array = np.asarray(values, dtype=dtype).reshape(shape)
        if tensor.name in tensors:
            raise InvalidInputError(f"input {tensor.name!r} appears twice")
        tensors[tensor.name] = array
    return tensors


class GatewayServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: GatewayCore) -> None:
        self.core = core

    async def _abort(self, context: grpc.aio.ServicerContext, error: Exception) -> None:
        status = error.status if isinstance(error, BackendError) else 400
        message = getattr(error, "message", None) or str(error)
        retry_after = getattr(error, "retry_after_s", None)
        trailing = (("retry-after", str(retry_after)),) if retry_after is not None else ()
        await context.abort(GRPC_STATUS.get(status, grpc.StatusCode.INTERNAL), message, trailing)

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.core.server_ready())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(name="flywheel-gateway", version="1")

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            ready = await self.core.model_ready(request.name, _version(request.version))
        except (BackendError, InvalidNameError):
            ready = False
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if self.core.table.get(request.name) is None:
                await self.core.table.lookup_missing(request.name)
            metadata = self.core.metadata(request.name, _version(request.version))
        except (BackendError, InvalidNameError) as error:
            await self._abort(context, error)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in metadata["inputs"]
            ],
            outputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in metadata["outputs"]
            ],
        )

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            inputs = decode_inputs(request)
            metadata = {
                key.lower(): value
                for key, value in (context.invocation_metadata() or ())
                if isinstance(value, str)
            }
            outcome = await self.core.infer(
                request.model_name,
                inputs,
                version=_version(request.model_version),
                request_id=request.id or metadata.get("x-request-id"),
                headers=metadata,
            )
        except (BackendError, InvalidNameError) as error:
            await self._abort(context, error)
        variant = outcome.variant
        await context.send_initial_metadata(tuple(outcome.headers.items()))
        response = service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version=str(variant.version), id=outcome.request_id
        )
        response.parameters["variant"].string_param = variant.name
        response.parameters["backend"].string_param = variant.backend
        if outcome.attribution is not None:  # for feedback through any gateway replica
            response.parameters["attribution"].string_param = outcome.attribution
        wanted = [output.name for output in request.outputs] or list(outcome.outputs)
        for name in wanted:
            if name not in outcome.outputs:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"requested output {name!r} does not exist"
                )
            array = np.ascontiguousarray(outcome.outputs[name])
            response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
            response.raw_output_contents.append(array.tobytes())
        return response


def create_grpc_server(
    core: GatewayCore, address: str, max_message_bytes: int, share_port: bool = False
) -> grpc.aio.Server:
    """``share_port``: one of several workers on one port (SO_REUSEPORT). gRPC sets that option by
    default on Linux, so a lone gateway turns it off: a port taken by another process must fail the
    start, not be shared with it silently."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1 if share_port else 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(GatewayServicer(core), server)
    server.add_insecure_port(address)
    return server
