"""Example inputs built from a model's signature, for clients that know nothing of its task.

``flywheel predict``, the Locust users and the gateway benchmark send what the model's v2
metadata describes (names, datatypes, shapes with ``-1`` for the batch) instead of constants of
one task: a model imported from elsewhere is exercised the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.protocols.v2 import V2_TO_NUMPY


def example_inputs(
    inputs: Sequence[Mapping[str, Any]], rows: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """One array per input of v2 metadata: ``-1`` dimensions become ``rows``; small random values
    for floating point (finite, near zero, as normalised features are), zeros otherwise."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        datatype = str(spec["datatype"])
        dtype = V2_TO_NUMPY.get(datatype)
        if dtype is None:
            raise ValueError(f"input {spec['name']!r}: no example values for datatype {datatype}")
        shape = tuple(rows if int(dim) < 0 else int(dim) for dim in spec["shape"])
        if dtype.kind == "f":
            arrays[str(spec["name"])] = rng.normal(0.0, 0.01, size=shape).astype(dtype)
        else:
            arrays[str(spec["name"])] = np.zeros(shape, dtype=dtype)
    return arrays


def v2_request(arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> dict[str, Any]:
    """A KServe v2 JSON infer body for ``arrays`` (datatype per input name)."""
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatypes[name],
                "data": array.ravel().tolist(),
            }
            for name, array in arrays.items()
        ]
    }
