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
