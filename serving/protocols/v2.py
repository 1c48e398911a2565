"""KServe v2 (Open Inference Protocol) tensors: JSON and the binary tensor extension, both ways.

Transport-free: bytes in, numpy out, and back. Every malformed input raises
:class:`InvalidInputError` with a message naming the tensor and the problem; nothing else
escapes, which a hypothesis test checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from serving.backends.base import InvalidInputError, Tensors

V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_V2 = {dtype: name for name, dtype in V2_TO_NUMPY.items()}
#: The header that splits a binary-extension body into its JSON part and the raw tensor bytes.
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_ELEMENTS = 64 * 1024 * 1024
MAX_DIMENSIONS = 32  # numpy's limit


MAX_REQUEST_ID = 128


def valid_request_id(request_id: str) -> bool:
    """Ids are echoed in headers and remembered for feedback: short, printable ASCII only."""
    return 0 < len(request_id) <= MAX_REQUEST_ID and request_id.isascii() and request_id.isprintable()


@dataclass(slots=True)
class V2Request:
    inputs: Tensors
    request_id: str | None = None
    binary_outputs: set[str] = field(default_factory=set)
    all_binary: bool = False
    requested_outputs: list[str] = field(default_factory=list)


def datatype_of(array: np.ndarray) -> str:
    try:
        return NUMPY_TO_V2[array.dtype]
    except KeyError:
        raise InvalidInputError(f"dtype {array.dtype} has no KServe v2 datatype") from None


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) for dim in raw
    ):
        raise InvalidInputError(f"input {name!r}: shape must be a list of integers, got {raw!r}")
    return check_shape(name, raw)


def check_shape(name: str, shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """A shape numpy can hold and this gateway accepts: 0-32 non-negative dims, bounded size."""
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInputError(f"input {name!r}: {len(shape)} dimensions; at most {MAX_DIMENSIONS}")
    if any(dim < 0 for dim in shape):
        raise InvalidInputError(f"input {name!r}: shape {list(shape)} has a negative dimension")
    # Each dimension on its own too: a zero elsewhere must not hide a dimension numpy cannot hold.
    if any(dim > MAX_ELEMENTS for dim in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise InvalidInputError(f"input {name!r}: shape {list(shape)} is larger than {MAX_ELEMENTS} elements")
    return tuple(shape)


def _typed(name: str, data: Any, dtype: np.dtype[Any], datatype: str) -> np.ndarray:
    """JSON data as ``dtype``; integers must fit (numpy would wrap 1000 into INT8 silently)."""
    try:
        if dtype.kind not in "iu":
            return np.asarray(data, dtype=dtype)
        raw = np.asarray(data)
        if raw.size and raw.dtype.kind not in "biu":
            raise InvalidInputError(f"input {name!r}: {datatype} data must be integers")
        limits = np.iinfo(dtype)
        if raw.size and (raw.min() < limits.min or raw.max() > limits.max):
            raise InvalidInputError(f"input {name!r}: values outside the range of {datatype}")
        return raw.astype(dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInputError(
            f"input {name!r}: data is not a (regular) array of {datatype}: {error}"
        ) from None


def _tensor(spec: Any, binary: memoryview, offset: int, kind: str = "input") -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict):
        raise InvalidInputError(f"each {kind} must be an object with name, shape, datatype and data")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"an {kind} has no name")
    datatype = spec.get("datatype")
    dtype = V2_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(
            f"{kind} {name!r}: datatype {datatype!r} is not supported; use one of {', '.join(V2_TO_NUMPY)}"
        )
    shape = _shape(name, spec.get("shape"))
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"input {name!r}: parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidInputError(f"input {name!r}: binary_data_size {size!r} does not fit the body")
        expected = math.prod(shape) * dtype.itemsize
        if size != expected:
            raise InvalidInputError(
                f"input {name!r}: {size} bytes of binary data, "
                f"but shape {list(shape)} of {datatype} needs {expected}"
            )
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
        return name, array, offset + size
    if "data" not in spec:
        raise InvalidInputError(f"input {name!r} has neither data nor parameters.binary_data_size")
    array = _typed(name, spec["data"], dtype, str(datatype))
    if array.size != math.prod(shape):
        raise InvalidInputError(f"input {name!r}: {array.size} values do not fill shape {list(shape)}")
    return name, array.reshape(shape), offset


def _split(body: bytes, header_length: int | None, what: str) -> tuple[dict[str, Any], memoryview]:
    """(JSON document, binary tail) of a body that may use the binary tensor extension."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInputError(f"{HEADER_LENGTH} {header_length} is outside the body")
        json_part, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"{what} body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"{what} body must be a JSON object")
    return document, binary


def _tensors(entries: Any, binary: memoryview, kind: str) -> Tensors:
    if not isinstance(entries, list) or not entries:
        raise InvalidInputError(f'the body needs a non-empty "{kind}s" list')
    tensors: Tensors = {}
    offset = 0
    for spec in entries:
        name, array, offset = _tensor(spec, binary, offset, kind)
        if name in tensors:
            raise InvalidInputError(f"{kind} {name!r} appears twice")
        tensors[name] = array
    return tensors


def decode_request(body: bytes, header_length: int | None = None) -> V2Request:
    """Parse an infer request body; ``header_length`` is the binary extension's JSON length."""
    document, binary = _split(body, header_length, "request")
    inputs = _tensors(document.get("inputs"), binary, "input")
    request_id = document.get("id")
    if request_id is not None and not (isinstance(request_id, str) and valid_request_id(request_id)):
        raise InvalidInputError(f'"id" must be 1-{MAX_REQUEST_ID} printable ASCII characters')
    parameters = document.get("parameters") or {}
    request = V2Request(
        inputs,
        request_id=request_id if isinstance(request_id, str) and request_id else None,
        all_binary=isinstance(parameters, dict) and parameters.get("binary_data_output") is True,
    )
    outputs = document.get("outputs") or []
    if not isinstance(outputs, list):
        raise InvalidInputError('"outputs" must be a list')
    for output in outputs:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInputError('each entry of "outputs" needs a name')
        request.requested_outputs.append(output["name"])
        output_parameters = output.get("parameters") or {}
        if isinstance(output_parameters, dict) and output_parameters.get("binary_data") is True:
            request.binary_outputs.add(output["name"])
    return request


def encode_request(inputs: Tensors, binary_output: bool = True) -> tuple[bytes, int]:
    """(body, header length) of an infer request with every input as binary data."""
    entries, chunks = [], []
    for name, array in inputs.items():
        raw = np.ascontiguousarray(array).tobytes()
        entries.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype_of(array),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    header = orjson.dumps({"inputs": entries, "parameters": {"binary_data_output": binary_output}})
    return header + b"".join(chunks), len(header)


def decode_response(body: bytes, header_length: int | None = None) -> Tensors:
    """The outputs of an infer response (JSON or binary extension)."""
    document, binary = _split(body, header_length, "response")
    return _tensors(document.get("outputs"), binary, "output")


def encode_response(
    model: str,
    version: int,
    request_id: str,
    outputs: Tensors,
    request: V2Request | None,
    parameters: dict[str, Any],
) -> tuple[bytes, int | None]:
    """(body, binary header length or None) for an infer response."""
    wanted = request.requested_outputs if request and request.requested_outputs else list(outputs)
    entries, chunks = [], []
    for name in wanted:
        if name not in outputs:
            raise InvalidInputError(f"requested output {name!r} does not exist; outputs: {list(outputs)}")
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if request is not None and (request.all_binary or name in request.binary_outputs):
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.reshape(-1)
        entries.append(entry)
    header = orjson.dumps(
        {
            "model_name": model,
            "model_version": str(version),
            "id": request_id,
            "parameters": parameters,
            "outputs": entries,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
