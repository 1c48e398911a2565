"""TF Serving's REST API over the servable manager (aiohttp)."""

from __future__ import annotations

import asyncio
import re
import time

import orjson
from aiohttp import web
from google.protobuf import json_format
from prometheus_client import generate_latest

from serving.backends.base import InvalidInputError
from serving.backends.tfserving.runtime.manager import ServableManager, ServingError
from serving.backends.tfserving.runtime.monitoring import DEFAULT_PATH, RuntimeMetrics
from serving.protocols.tf_rest import decode_predict, encode_predictions

HTTP_STATUS = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "UNAVAILABLE": 503}
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict)?$"
)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=status, dumps=lambda data: orjson.dumps(data).decode()
    )


def create_rest_app(
    manager: ServableManager, metrics: RuntimeMetrics | None = None, metrics_path: str = DEFAULT_PATH
) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        match = _PATH.match(request.path)
        if match is None:
            return _error(404, f"Malformed request: {request.method} {request.path}")
        name, label, suffix = match["name"], match["label"], match["suffix"]
        version = int(match["version"]) if match["version"] else None
        try:
            if suffix == ":predict":
                if request.method != "POST":
                    return _error(405, "predict needs POST")
                started = time.perf_counter()
                try:
                    response = await _predict(request, name, version, label)
                except ServingError as error:
                    if metrics is not None:
                        elapsed = time.perf_counter() - started
                        metrics.record(name, error.code, "predict", "REST", elapsed, name in manager.loaded())
                    raise
                if metrics is not None:
                    status = "OK" if response.status == 200 else "INVALID_ARGUMENT"
                    metrics.record(name, status, "predict", "REST", time.perf_counter() - started)
                return response
            if request.method != "GET":
                return _error(405, f"{request.method} is not supported here")
            if suffix == "/metadata":
                servable = manager.resolve(name, version, label)
                signature_map = {
                    key: json_format.MessageToDict(value) for key, value in servable.signature_defs.items()
                }
                return web.json_response(
                    {
                        "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                        "metadata": {"signature_def": {"signature_def": signature_map}},
                    }
                )
            rows = manager.status(name, version, label)
            return web.json_response(
                {
                    "model_version_status": [
                        {
                            "version": str(row_version),
                            "state": state,
                            "status": {
                                "error_code": "OK" if not message else "UNKNOWN",
                                "error_message": message,
                            },
                        }
                        for row_version, state, message in rows
                    ]
                }
            )
        except ServingError as error:
            return _error(HTTP_STATUS.get(error.code, 500), error.message)

    async def _predict(
        request: web.Request, name: str, version: int | None, label: str | None
    ) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as error:
            return _error(400, f"JSON Parse error: {error}")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        servable = manager.resolve(name, version, label)
        signature_name = body.get("signature_name") or "serving_default"
        definition = servable.signature_defs.get(signature_name)
        input_names = sorted(definition.inputs) if definition is not None else []
        try:
            inputs, row_format = decode_predict(body, input_names)
        except InvalidInputError as error:
            return _error(400, error.message)
        outputs = await asyncio.to_thread(manager.predict, servable, signature_name, inputs)
        payload = encode_predictions(outputs, row_format)
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def prometheus(request: web.Request) -> web.Response:
        assert metrics is not None
        return web.Response(
            body=generate_latest(metrics.registry), content_type="text/plain", charset="utf-8"
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/v1/models/{tail:.*}", handle)
    if metrics is not None:
        app.router.add_get(metrics_path, prometheus)
    return app
