"""The gateway's REST skin (aiohttp): KServe v2, the TF Serving and TorchServe paths, feedback, metrics.

Thin on purpose: parse the transport, call :class:`GatewayCore`, write the answer. The route
table is declared in one place, :func:`create_app`. Every error becomes a v2 ``{"error": ...}``
with the status its exception class carries; an unexpected exception is logged and answered
500, and the process keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import brotli
import numpy as np
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from model_store.errors import (
    AliasConflictError,
    InvalidNameError,
    ModelNotFoundError,
    ObjectNotFoundError,
    VersionNotFoundError,
)
from model_store.names import validate_version
from serving.backends.base import BackendError, InvalidInputError
from serving.gateway.core import GatewayCore, InferenceOutcome
from serving.gateway.openapi import openapi_document
from serving.protocols.tf_rest import (
    check_signature_name,
    decode_predict,
    encode_predictions,
    metadata_response,
    version_status_response,
)
from serving.protocols.v2 import HEADER_LENGTH, decode_request, encode_response
from serving.routing.operations import RolloutInProgressError
from serving.routing.spec import SpecError
from serving.routing.spec_store import SpecNotFoundError, StaleRevisionError

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_TF_PATH = re.compile(r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+))?:predict$")
_TF_GET_PATH = re.compile(r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<metadata>/metadata)?$")


def error_status(error: Exception) -> int | None:
    """The HTTP status for an exception the core or the admin service raises, None if unexpected."""
    if isinstance(error, BackendError):
        return error.status
    if isinstance(error, StaleRevisionError | AliasConflictError | RolloutInProgressError):
        return 409
    if isinstance(error, SpecNotFoundError | ModelNotFoundError | VersionNotFoundError | ObjectNotFoundError):
        return 404
    if isinstance(error, SpecError | InvalidNameError | ValidationError):
        return 400
    return None


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(
    status: int, message: str, request_id: str | None = None, retry_after_s: int | None = None
) -> web.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return json_response({"error": message}, status, headers or None)


@web.middleware
async def v2_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as error:
        return v2_error_response(request, error)


def v2_error_response(request: web.Request, error: Exception) -> web.StreamResponse:
    """Every failure as a v2 ``{"error": ...}`` with its status; unexpected ones are logged, 500.
    aiohttp's own below 400 (a redirect) is raised again: it is no error."""
    if isinstance(error, web.HTTPException):  # aiohttp's own: unknown path (404), body too large (413)
        if error.status < 400:
            raise error
        response = error_response(
            error.status, error.reason if error.status != 413 else error.text or error.reason
        )
        if "Allow" in error.headers:  # 405 names the methods the path takes (RFC 9110)
            response.headers["Allow"] = error.headers["Allow"]
        return response
    if isinstance(error, web.RequestPayloadError):
        # A body that does not decode as its Content-Encoding says (gzip, br, deflate) or that
        # broke off: the client's fault, so 400, never 500.
        cause = error.__cause__ or error
        return error_response(400, f"the request body could not be read: {cause}")
    status = error_status(error)
    if status is None:
        log.error("unexpected error serving %s %s", request.method, request.path, exc_info=error)
        return error_response(500, f"internal error: {type(error).__name__}")
    return error_response(
        status,
        getattr(error, "message", None) or str(error),
        request.headers.get("x-request-id"),
        getattr(error, "retry_after_s", None),
    )


def data_plane(core: GatewayCore, body_timeout_s: float) -> Any:
    """The one middleware of the data-plane routes (one layer, not three: each costs every request).

    - **Body deadline**: every request body is read up front within ``body_timeout_s``; a slower
      client gets 408. aiohttp has no body-read timeout of its own, so a client announcing a larger
      Content-Length than it sends would hold a connection (and a handler) forever. The body is
      cached on the request, so handlers read it again for free.
    - **Known models**: before a route that names a model this replica does not know, look in the
      store once. Another gateway replica may have just deployed it (``RoutingTable.lookup_missing``),
      so metadata, readiness and the compatibility paths answer like inference does, not 404.
    - **v2 errors**: every failure becomes ``{"error": ...}`` with its status (:func:`v2_errors`).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            # A body that arrived with its headers (any small request) needs no timer: that is most
            # requests, and a timer per request is measurable on the hot path (docs/benchmarks.md).
            if request.body_exists and not request.content.is_eof():
                try:
                    async with asyncio.timeout(body_timeout_s):
                        await request.read()
                except TimeoutError:
                    message = f"the request body did not arrive within {body_timeout_s:g} s"
                    response = error_response(408, message)
                    response.force_close()
                    return response
            info = request.match_info
            model = info.get("model")
            if model is None and "tail" in info:  # TF Serving's /v1/models/<m>[/...][:verb]
                model = info["tail"].split("/", 1)[0].split(":", 1)[0]
            if model and core.table.get(model) is None:
                await core.table.lookup_missing(model)
            return await handler(request)
        except Exception as error:
            return v2_error_response(request, error)

    return middleware


def path_version(request: web.Request) -> int | None:
    raw = request.match_info.get("version")
    return None if raw is None else validate_version(raw)


#: Largest decompressed body, as a multiple of the compressed limit (a zip bomb stops there).
_MAX_INFLATION = 8


async def read_body(request: web.Request) -> bytes:
    """The request body, decoded per ``Content-Encoding`` (gzip, deflate, br, identity).

    The gateway's server runs with aiohttp's automatic decompression off: decoding inside
    aiohttp's parser fails mid-stream, and the connection is reset before the client reads an
    answer. Decoding here turns a body that is not what its header says into a plain 400, and
    caps what a small compressed body may inflate to (a decompression bomb stops there).
    """
    raw = await request.read()
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate", "br"):
        raise InvalidInputError(
            f"Content-Encoding {encoding!r} is not supported; use gzip, deflate, br or none"
        )
    limit = request.app._client_max_size * _MAX_INFLATION
    try:
        # Off the event loop: inflating megabytes would stall every other request meanwhile.
        return await asyncio.to_thread(decode_body, raw, encoding, limit)
    except (zlib.error, brotli.error, ValueError) as error:
        raise InvalidInputError(f"the request body could not be read as {encoding}: {error}") from None


def decode_body(raw: bytes, encoding: str, limit: int) -> bytes:
    """Decoded bytes, never more than ``limit`` of them (ValueError past it, or when truncated)."""
    if encoding == "br":
        decoder = brotli.Decompressor()
        body = decoder.process(raw, output_buffer_limit=limit + 1)
        if len(body) > limit:
            raise ValueError("larger than the body limit once decompressed")
        if not decoder.is_finished():
            raise ValueError("truncated")
        return body
    parts, total, data = [], 0, raw
    # gzip may hold several members back to back; deflate comes with or without its zlib header.
    wbits = (
        16 + zlib.MAX_WBITS
        if encoding != "deflate"
        else (zlib.MAX_WBITS if _zlib_header(raw) else -zlib.MAX_WBITS)
    )
    while data:
        decoder = zlib.decompressobj(wbits)
        part = decoder.decompress(data, limit - total + 1)
        total += len(part)
        if total > limit or decoder.unconsumed_tail:
            raise ValueError("larger than the body limit once decompressed")
        if not decoder.eof:
            raise ValueError("truncated")
        parts.append(part)
        data = decoder.unused_data if encoding != "deflate" else b""
    return b"".join(parts)


def _zlib_header(raw: bytes) -> bool:
    return len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0


async def read_json(request: web.Request) -> Any:
    try:
        return orjson.loads(await read_body(request))
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"request body is not valid JSON: {error}") from None


def tf_path(pattern: re.Pattern[str], request: web.Request) -> tuple[str, int | None, re.Match[str]]:
    """(model, version or None, the match) of a TF Serving path, or 404."""
    match = pattern.match(request.match_info["tail"])
    if match is None:
        raise web.HTTPNotFound(reason=f"no such TF Serving path: {request.path}")
    version = validate_version(match["version"]) if match["version"] else None
    return match["model"], version, match


def outcome_response(outcome: InferenceOutcome, payload: Any) -> web.Response:
    return json_response(payload, headers=outcome.headers)


class RestGateway:
    """Handlers of the data-plane routes over one :class:`GatewayCore`."""

    def __init__(self, core: GatewayCore, exposition: CollectorRegistry | None = None) -> None:
        self.core = core
        self.exposition = exposition or core.metrics.registry

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.core.server_ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response(
            {"name": "flywheel-gateway", "version": "1", "extensions": ["binary_tensor_data"]}
        )

    async def model_metadata(self, request: web.Request) -> web.Response:
        return json_response(self.core.metadata(request.match_info["model"], path_version(request)))

    async def model_ready(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], path_version(request)
        self.core.live(model)  # unknown model: 404 with the list of deployed ones
        ready = await self.core.model_ready(model, version)
        return json_response({"name": model, "ready": ready}, 200 if ready else 400)

    async def infer(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], path_version(request)
        raw_length = request.headers.get(HEADER_LENGTH)
        try:
            header_length = int(raw_length) if raw_length is not None else None
        except ValueError:
            raise InvalidInputError(f"{HEADER_LENGTH} must be an integer, got {raw_length!r}") from None
        decoded = decode_request(await read_body(request), header_length)
        outcome = await self.core.infer(
            model,
            decoded.inputs,
            version=version,
            request_id=request.headers.get("x-request-id") or decoded.request_id,
            headers=request.headers,
        )
        variant = outcome.variant
        body, binary_length = encode_response(
            model,
            variant.version,
            outcome.request_id,
            outcome.outputs,
            decoded,
            {"variant": variant.name, "backend": variant.backend},
        )
        headers = outcome.headers
        if binary_length is None:
            return web.Response(body=body, headers=headers, content_type="application/json")
        headers[HEADER_LENGTH] = str(binary_length)
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")

    async def tf_predict(self, request: web.Request) -> web.Response:
        model, version, _ = tf_path(_TF_PATH, request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidInputError("the request body must be a JSON object")
        check_signature_name(body)
        names = [spec.name for spec in self.core.signature(model, version).inputs]
        inputs, row_format = decode_predict(body, names)
        outcome = await self.core.infer(
            model,
            inputs,
            version=version,
            request_id=request.headers.get("x-request-id"),
            headers=request.headers,
            coerce=True,
        )
        return outcome_response(outcome, encode_predictions(outcome.outputs, row_format))

    async def tf_status_or_metadata(self, request: web.Request) -> web.Response:
        """TF Serving's ``GET /v1/models/M[/versions/N][/metadata]``, from the routing spec."""
        model, version, match = tf_path(_TF_GET_PATH, request)
        live = self.core.live(model)
        if match["metadata"]:
            chosen = version if version is not None else live.spec.routable()[0].version
            return json_response(metadata_response(model, chosen, self.core.signature(model, chosen)))
        if version is not None:
            self.core.signature(model, version)  # not deployed: 404 naming the deployed versions
        versions = [version] if version is not None else live.spec.versions()
        states = [(number, await self.core.model_ready(model, number)) for number in versions]
        return json_response(version_status_response(states))

    async def torchserve_predict(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], path_version(request)
        body = await read_json(request)
        instances = body.get("instances", body.get("inputs")) if isinstance(body, dict) else body
        names = [spec.name for spec in self.core.signature(model, version).inputs]
        if len(names) != 1:
            raise InvalidInputError(f"{model} has inputs {names}; use the v2 or TF Serving path")
        try:
            array = np.asarray(instances, dtype=np.float32)
        except (ValueError, TypeError) as error:
            raise InvalidInputError(f"instances are not a rectangular array of numbers: {error}") from None
        outcome = await self.core.infer(
            model,
            {names[0]: array},
            version=version,
            request_id=request.headers.get("x-request-id"),
            headers=request.headers,
        )
        first = next(iter(outcome.outputs.values()))
        # As Flywheel's TorchServe handler answers: a number per row, or a row per row (a classifier's
        # probabilities).
        rows = first.reshape(len(first), -1) if first.ndim else first.reshape(1, -1)
        return outcome_response(outcome, {"predictions": rows[:, 0] if rows.shape[1] == 1 else rows})

    async def feedback(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise InvalidInputError('feedback needs a JSON object with a string "id"')
        reward, label = body.get("reward"), body.get("label")
        for name, value in (("reward", reward), ("label", label)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InvalidInputError(f"{name} must be a number")
        attribution = body.get("attribution") or request.headers.get("x-flywheel-attribution")
        if attribution is not None and not isinstance(attribution, str):
            raise InvalidInputError('"attribution" must be the x-flywheel-attribution header\'s string')
        result = await self.core.feedback(request.match_info["model"], body["id"], reward, label, attribution)
        return json_response(result)

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document())

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.exposition), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def create_app(
    core: GatewayCore,
    max_body_bytes: int,
    admin_app: web.Application | None = None,
    body_timeout_s: float = 30.0,
    exposition: CollectorRegistry | None = None,
) -> web.Application:
    """The gateway's whole REST surface; ``admin_app`` (``serving.gateway.admin_rest``) mounts at /admin.

    ``exposition``: what /metrics shows, when not the core's own registry (the sum over a replica's
    workers, ``serving.gateway.workers``).
    """
    rest = RestGateway(core, exposition)
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[data_plane(core, body_timeout_s)],
    )
    app.add_routes(
        [
            # The hot routes first: aiohttp tries resources in order.
            web.post("/v2/models/{model}/infer", rest.infer),
            web.post("/v2/models/{model}/versions/{version}/infer", rest.infer),
            web.get("/v2/health/live", rest.live),
            web.get("/v2/health/ready", rest.ready),
            web.get("/v2", rest.server_metadata),
            web.get("/v2/", rest.server_metadata),
            web.get("/v2/models/{model}", rest.model_metadata),
            web.get("/v2/models/{model}/ready", rest.model_ready),
            web.get("/v2/models/{model}/versions/{version}", rest.model_metadata),
            web.get("/v2/models/{model}/versions/{version}/ready", rest.model_ready),
            web.post("/v2/models/{model}/feedback", rest.feedback),
            web.post("/v1/models/{tail:.+}", rest.tf_predict),
            web.get("/v1/models/{tail:.+}", rest.tf_status_or_metadata),
            web.post("/predictions/{model}", rest.torchserve_predict),
            web.post("/predictions/{model}/{version}", rest.torchserve_predict),
            web.get("/metrics", rest.metrics),
            web.get("/openapi.json", rest.openapi),
        ]
    )
    if admin_app is not None:
        app.add_subapp("/admin", admin_app)
    return app
