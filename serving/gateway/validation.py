"""What the gateway checks before and after a model call, independent of transport.

Inputs: named, shaped and typed as the version's signature says, finite unless the signature
allows otherwise, within its batch limit. Outputs: finite, because the protocol's JSON cannot
carry NaN or infinity (it would become ``null``, which the OIP tensor schema forbids).
"""

from __future__ import annotations

import numpy as np

from model_store.manifest import Signature
from serving.backends.base import InvalidInputError, OutputFaultError, Tensors
from serving.protocols.v2 import V2_TO_NUMPY
from serving.routing.spec import Variant


def _refuse_non_finite(name: str, array: np.ndarray) -> None:
    """NaN, infinity, and numbers out of the datatype's range (they became infinity when cast)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInputError(
            f"input {name!r} holds NaN, infinity or a value out of range for {array.dtype}; "
            "floating-point inputs must be finite (a model's signature can allow them: allow_non_finite)"
        )


def check_signature(model: str, signature: Signature, inputs: Tensors, coerce: bool = False) -> Tensors:
    """Inputs named, shaped and typed as the version's signature says.

    v2 requests declare their datatype, which must match. ``coerce`` is for the compatibility
    paths, whose JSON numbers carry no type: numbers are cast to a floating-point signature.
    """
    if not signature.inputs:
        for name, array in inputs.items():
            _refuse_non_finite(name, array)
        return inputs
    expected = {spec.name: spec for spec in signature.inputs}
    if set(inputs) != set(expected):
        raise InvalidInputError(f"{model} expects inputs {sorted(expected)}, got {sorted(inputs)}")
    checked = {}
    for name, array in inputs.items():
        spec = expected[name]
        want = V2_TO_NUMPY.get(spec.datatype)
        if want is not None and array.dtype != want:
            if coerce and array.dtype.kind in "fiu" and want.kind == "f":
                array = array.astype(want)  # JSON numbers on the compatibility paths
            else:
                raise InvalidInputError(
                    f"input {name!r} has datatype {array.dtype}, {model} expects {spec.datatype}"
                )
        if len(array.shape) != len(spec.shape) or any(
            want_dim >= 0 and got != want_dim for got, want_dim in zip(array.shape, spec.shape, strict=True)
        ):
            raise InvalidInputError(
                f"input {name!r} has shape {list(array.shape)}, {model} expects {spec.shape}"
            )
        if array.shape and array.shape[0] == 0:
            raise InvalidInputError(f"input {name!r} has an empty batch")
        if signature.max_batch_size is not None and array.shape and array.shape[0] > signature.max_batch_size:
            raise InvalidInputError(
                f"input {name!r} has a batch of {array.shape[0]} rows; {model} takes at most "
                f"{signature.max_batch_size} per request (max_batch_size in its metadata): split it"
            )
        if not spec.allow_non_finite:
            _refuse_non_finite(name, array)
        checked[name] = array
    return checked


def check_finite_outputs(model: str, variant: Variant, outputs: Tensors) -> None:
    """NaN or infinity cannot travel in OIP JSON (it would become ``null``): a model fault, said so."""
    for name, array in outputs.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise OutputFaultError(
                f"{variant.name} ({model} v{variant.version}) returned {bad} non-finite value(s) "
                f"(NaN or infinity) in output {name!r}; the model, not the request, is at fault"
            )
