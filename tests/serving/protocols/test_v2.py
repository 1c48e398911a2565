"""KServe v2 tensor decoding and encoding: round trips, tritonclient's parser, and fuzzing."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.backends.base import InvalidInputError
from serving.protocols.v2 import HEADER_LENGTH, NUMPY_TO_V2, V2Request, decode_request, encode_response

DTYPES = [np.dtype(d) for d in ("bool", "int8", "int32", "int64", "uint8", "float16", "float32", "float64")]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
        elements={"allow_nan": False, "allow_infinity": False} if dtype.kind == "f" else None,
    )
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(array=arrays, binary=st.booleans())
def test_any_tensor_round_trips_as_json_or_binary(array: np.ndarray, binary: bool) -> None:
    spec = {"name": "x", "shape": list(array.shape), "datatype": NUMPY_TO_V2[array.dtype]}
    if binary:
        spec["parameters"] = {"binary_data_size": array.nbytes}
        header = orjson.dumps({"inputs": [spec]})
        decoded = decode_request(header + array.tobytes(), len(header))
    else:
        spec["data"] = array.ravel().tolist()
        decoded = decode_request(orjson.dumps({"inputs": [spec]}))
    assert decoded.inputs["x"].dtype == array.dtype
    np.testing.assert_array_equal(decoded.inputs["x"], array)


@given(array=arrays, binary=st.booleans())
def test_responses_parse_with_tritonclient(array: np.ndarray, binary: bool) -> None:
    request = V2Request({}, binary_outputs={"y"} if binary else set())
    body, header_length = encode_response("m", 3, "id-1", {"y": array}, request, {"variant": "v"})
    assert (header_length is not None) == binary
    result = triton_http.InferResult.from_response_body(body, header_length=header_length)
    assert result.get_response()["model_version"] == "3"
    np.testing.assert_array_equal(result.as_numpy("y"), array)


@settings(max_examples=300)
@given(document=json_values)
def test_arbitrary_json_is_refused_cleanly(document: object) -> None:
    try:
        decoded = decode_request(json.dumps(document).encode())
    except InvalidInputError as error:
        assert error.status == 400 and error.message
    else:
        assert isinstance(decoded.inputs, dict) and decoded.inputs


@settings(max_examples=300)
@given(
    name=st.text(max_size=4),
    shape=st.lists(st.integers(-3, 2**40), max_size=4) | json_values,
    datatype=st.sampled_from(["FP32", "INT64", "BOOL", "BYTES", "fp32", ""]) | json_values,
    data=json_values,
    size=st.none() | st.integers(-5, 2000) | json_values,
    tail=st.binary(max_size=64),
)
def test_malformed_tensors_only_ever_raise_invalid_input(
    name: str, shape: object, datatype: object, data: object, size: object, tail: bytes
) -> None:
    spec: dict[str, object] = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    if size is not None:
        spec["parameters"] = {"binary_data_size": size}
    header = json.dumps({"inputs": [spec]}).encode()  # stdlib: big integers and NaN pass through
    for body, length in ((header, None), (header + tail, len(header)), (tail, len(tail) // 2)):
        with contextlib.suppress(InvalidInputError):
            decode_request(body, length)


def test_errors_name_the_problem() -> None:
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        decode_request(b"{")
    with pytest.raises(InvalidInputError, match="do not fill shape"):
        decode_request(
            orjson.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]})
        )
    with pytest.raises(InvalidInputError, match="larger than"):
        decode_request(
            orjson.dumps({"inputs": [{"name": "x", "shape": [2**20, 2**20], "datatype": "FP32", "data": []}]})
        )
    with pytest.raises(InvalidInputError, match=HEADER_LENGTH):
        decode_request(b"{}", 10)
    with pytest.raises(InvalidInputError, match="appears twice"):
        tensor = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
        decode_request(orjson.dumps({"inputs": [tensor, tensor]}))


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"shape": [1] * 33, "data": [1]}, "at most 32"),
        ({"shape": [0, 2**62, 4], "data": []}, "larger than"),
        ({"datatype": "INT8", "shape": [1], "data": [1000]}, "outside the range of INT8"),
        ({"datatype": "UINT8", "shape": [1], "data": [-1]}, "outside the range of UINT8"),
        ({"datatype": "INT32", "shape": [1], "data": [1.5]}, "must be integers"),
    ],
)
def test_shapes_numpy_cannot_hold_and_out_of_range_integers_are_refused(
    tensor: dict[str, object], message: str
) -> None:
    spec = {"name": "x", "datatype": "FP32", **tensor}
    with pytest.raises(InvalidInputError, match=message):
        decode_request(orjson.dumps({"inputs": [spec]}))


@pytest.mark.parametrize("request_id", ["a\nb", "x" * 129, "é", ""])
def test_request_ids_must_be_short_printable_ascii(request_id: str) -> None:
    tensor = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    with pytest.raises(InvalidInputError, match='"id"'):
        decode_request(orjson.dumps({"id": request_id, "inputs": [tensor]}))
