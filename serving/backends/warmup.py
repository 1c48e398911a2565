"""Warm a freshly loaded version up before it gets traffic (the model agent does, per replica)."""

from __future__ import annotations

import logging

import numpy as np

from model_store.manifest import Signature
from serving.backends.base import BackendError, ModelBackend
from serving.protocols.v2 import V2_TO_NUMPY

log = logging.getLogger(__name__)


#: Inferences a freshly loaded version answers before it gets traffic: first calls are slow
#: (lazy initialisation in the servers), and a canary's latency check must not judge them.
WARMUP_REQUESTS = 5


async def warm_up(server: ModelBackend, model: str, version: int, signature: Signature) -> None:
    """Send zero-valued inputs shaped by the signature (batch 1), best effort.

    Warm-up is about latency, not judgement: a failing answer is logged and the deploy goes on,
    because the canary's analysis (on real traffic) is what decides about errors.
    """
    inputs = {
        spec.name: np.zeros([1 if dim < 0 else dim for dim in spec.shape], dtype=V2_TO_NUMPY[spec.datatype])
        for spec in signature.inputs
        if spec.datatype in V2_TO_NUMPY
    }
    if len(inputs) != len(signature.inputs):
        return  # an input numpy cannot build (BYTES): no synthetic warm-up
    for attempt in range(WARMUP_REQUESTS):
        try:
            await server.infer(model, version, inputs)
        except BackendError as error:
            log.warning("warm-up request %d to %s v%d failed: %s", attempt + 1, model, version, error)
