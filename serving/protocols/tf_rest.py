"""TF Serving's REST predict bodies (``instances`` row format, ``inputs`` columnar format).

Shared by the TF-Serving-protocol runtime and the gateway's ``/v1/models/{m}:predict``
compatibility path, so both read and write exactly the same JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.backends.base import InvalidInputError


def decode_predict(body: dict[str, Any], input_names: list[str]) -> tuple[dict[str, np.ndarray], bool]:
    """(named arrays, row format?) from a predict body; malformed bodies raise InvalidInputError."""
    try:
        return _decode(body, input_names)
    except (ValueError, TypeError, KeyError) as error:  # ragged lists, rows missing a key
        raise InvalidInputError(f"inputs are not a rectangular array: {error!r}") from None


def _decode(body: dict[str, Any], input_names: list[str]) -> tuple[dict[str, np.ndarray], bool]:
    if ("instances" in body) == ("inputs" in body):
        raise InvalidInputError('the request needs exactly one of "instances" or "inputs"')
    row_format = "instances" in body
    payload = body["instances"] if row_format else body["inputs"]
    if row_format:
        if not isinstance(payload, list) or not payload:
            raise InvalidInputError('"instances" must be a non-empty list')
        if isinstance(payload[0], dict):
            return {key: np.asarray([row[key] for row in payload]) for key in payload[0]}, True
        if len(input_names) != 1:
            raise InvalidInputError(f"the signature has inputs {input_names}: send objects per instance")
        return {input_names[0]: np.asarray(payload)}, True
    if isinstance(payload, dict):
        return {key: np.asarray(value) for key, value in payload.items()}, False
    if len(input_names) != 1:
        raise InvalidInputError(f"the signature has inputs {input_names}: send an object of inputs")
    return {input_names[0]: np.asarray(payload)}, False


def encode_predictions(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if row_format:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        rows = len(next(iter(outputs.values())))
        return {
            "predictions": [
                {key: value[index].tolist() for key, value in outputs.items()} for index in range(rows)
            ]
        }
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values())).tolist()}
    return {"outputs": {key: value.tolist() for key, value in outputs.items()}}


#: KServe v2 datatypes as TF Serving names them in signature metadata.
V2_TO_TF_DTYPE = {
    "BOOL": "DT_BOOL",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}
DEFAULT_SIGNATURE = "serving_default"


def check_signature_name(body: dict[str, Any]) -> None:
    """Only ``serving_default`` exists behind the gateway; anything else fails as TF Serving does."""
    name = body.get("signature_name")
    if name in (None, "", DEFAULT_SIGNATURE):
        return
    raise InvalidInputError(f'Serving signature name: "{name}" not found in signature def')


def _tensor_info(spec: Any) -> dict[str, Any]:
    return {
        "dtype": V2_TO_TF_DTYPE.get(spec.datatype, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(dim), "name": ""} for dim in spec.shape],
            "unknown_rank": False,
        },
        "name": f"{DEFAULT_SIGNATURE}_{spec.name}:0",
    }


def metadata_response(model: str, version: int, signature: Any) -> dict[str, Any]:
    """``GET /v1/models/M[/versions/N]/metadata`` as TF Serving answers it, from a v2 signature."""
    definition = {
        "inputs": {spec.name: _tensor_info(spec) for spec in signature.inputs},
        "outputs": {spec.name: _tensor_info(spec) for spec in signature.outputs},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {DEFAULT_SIGNATURE: definition}}},
    }


def version_status_response(states: list[tuple[int, bool]]) -> dict[str, Any]:
    """``GET /v1/models/M[/versions/N]``: each version AVAILABLE when ready, else LOADING."""
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": "AVAILABLE" if ready else "LOADING",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for version, ready in states
        ]
    }
