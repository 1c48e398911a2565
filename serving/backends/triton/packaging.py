"""Triton's model configuration for a packaged version (the Python backend entry)."""

from __future__ import annotations

from model_store.manifest import Signature, TensorSpec

_TRITON_DATATYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32"}
_DEFAULT_TRITON_MAX_BATCH = 256


def triton_config(
    name: str, signature: Signature, max_batch_size: int | None = None, device: str = "cpu"
) -> str:
    """``config.pbtxt`` for the Python backend; the batch axis (-1) is implicit in Triton."""

    def tensors(specs: list[TensorSpec]) -> str:
        rendered = []
        for spec in specs:
            dims = ", ".join(str(d) for d in spec.shape[1:])
            rendered.append(
                f'  {{ name: "{spec.name}" data_type: {_TRITON_DATATYPES[spec.datatype]} dims: [ {dims} ] }}'
            )
        return ",\n".join(rendered)

    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    # One limit for the gateway (it refuses larger batches early) and for Triton.
    max_batch_size = max_batch_size or signature.max_batch_size or _DEFAULT_TRITON_MAX_BATCH
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{tensors(signature.inputs)}\n]\noutput [\n{tensors(signature.outputs)}\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        f"instance_group [ {{ kind: {kind} count: 1 }} ]\n"
    )
