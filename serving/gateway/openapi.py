"""The OpenAPI 3 description of the gateway's data plane, served at ``/openapi.json``.

Written by hand to match :func:`serving.gateway.rest.create_app`; the schemathesis test fuzzes
the live gateway from it, so a route that drifts from its description fails that test.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "A client error, in the KServe v2 shape",
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
        }
    },
}
_JSON_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": ["BOOL", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "data": {"type": "array", "items": {"type": "number"}},
        "parameters": {"type": "object"},
    },
}
_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "inputs": {"type": "array", "items": _TENSOR},
                    "outputs": {"type": "array", "items": {"type": "object"}},
                    "parameters": {"type": "object"},
                },
            }
        }
    },
}
_ANY_JSON_BODY = {"required": True, "content": {"application/json": {"schema": {}}}}


def _operation(
    summary: str, parameters: list[dict[str, Any]], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    responses = {"200": _JSON_OK, "400": _ERROR, "404": _ERROR, "413": _ERROR, "503": _ERROR}
    operation: dict[str, Any] = {"summary": summary, "parameters": parameters, "responses": responses}
    if body is not None:
        operation["requestBody"] = body
    return operation


def openapi_document() -> dict[str, Any]:
    infer = _operation("Infer, routed by the model's routing spec", [_MODEL], _INFER_BODY)
    pinned = _operation("Infer on one deployed version", [_MODEL, _VERSION], _INFER_BODY)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Flywheel gateway", "version": "1"},
        "paths": {
            "/v2/health/live": {"get": _operation("Liveness", [])},
            "/v2/health/ready": {"get": _operation("Readiness", [])},
            "/v2": {"get": _operation("Server metadata", [])},
            "/v2/models/{model}": {"get": _operation("Model metadata", [_MODEL])},
            "/v2/models/{model}/ready": {"get": _operation("Model readiness", [_MODEL])},
            "/v2/models/{model}/versions/{version}": {
                "get": _operation("Version metadata", [_MODEL, _VERSION])
            },
            "/v2/models/{model}/versions/{version}/ready": {
                "get": _operation("Version readiness", [_MODEL, _VERSION])
            },
            "/v2/models/{model}/infer": {"post": infer},
            "/v2/models/{model}/versions/{version}/infer": {"post": pinned},
            "/v2/models/{model}/feedback": {
                "post": _operation(
                    "Reward or label for a served request",
                    [_MODEL],
                    {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["id"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "reward": {"type": "number"},
                                        "label": {"type": "number"},
                                    },
                                }
                            }
                        },
                    },
                )
            },
            "/v1/models/{model}:predict": {
                "post": _operation("TF Serving REST predict", [_MODEL], _ANY_JSON_BODY)
            },
            "/predictions/{model}": {"post": _operation("TorchServe predict", [_MODEL], _ANY_JSON_BODY)},
        },
    }
