"""The gateway's transport-free core: route, validate, call the backend, fail over, measure.

REST and gRPC both call :meth:`GatewayCore.infer` with named numpy arrays and get back an
:class:`InferenceOutcome`; neither knows how routing works, and the core knows nothing of HTTP
or gRPC. Errors are the adapters' :class:`BackendError` family, whose ``status`` the skins map.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.manifest import Signature
from serving.backends.base import (
    BackendError,
    BackendUnavailableError,
    InvalidInputError,
    ModelBackend,
    ModelNotLoadedError,
    OutputFaultError,
    Tensors,
    VersionReloadingError,
)
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.routing_table import LiveModel, RoutingTable
from serving.gateway.sampling import ProfileSampler
from serving.protocols.v2 import MAX_REQUEST_ID, V2_TO_NUMPY, valid_request_id
from serving.routing.spec import Variant
from serving.routing.strategies import Route, RouteRequest

log = logging.getLogger(__name__)


class UnknownModelError(ModelNotLoadedError):
    """No routing spec for the model, or the pinned version is not deployed."""


class GatewayNotReadyError(BackendUnavailableError):
    """The routing specs are not loaded yet (just started, or the store unreachable since start)."""


@dataclass(frozen=True, slots=True)
class InferenceOutcome:
    outputs: Tensors
    variant: Variant
    request_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "x-request-id": self.request_id,
            "x-flywheel-variant": self.variant.name,
            "x-flywheel-version": str(self.variant.version),
            "x-flywheel-backend": self.variant.backend,
        }


@dataclass(slots=True)
class ServedRequest:
    model: str
    variant: str
    prediction: float


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


class GatewayCore:
    def __init__(
        self,
        table: RoutingTable,
        backends: Mapping[str, ModelBackend],
        metrics: GatewayMetrics,
        sampler: ProfileSampler,
        timeout_s: float,
        feedback_memory: int = 100_000,
    ) -> None:
        self.table = table
        self.backends = backends
        self.metrics = metrics
        self.sampler = sampler
        self.timeout_s = timeout_s
        self.feedback_memory = feedback_memory
        self._served: OrderedDict[str, ServedRequest] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._shadows_in_flight = 0
        #: Below the adapters' connection pools (64), so shadows never starve callers.
        self.max_shadows_in_flight = 16

    # Lookups -----------------------------------------------------------------------------------
    def live(self, model: str) -> LiveModel:
        live = self.table.get(model)
        if live is None and not self.server_ready():
            # Before the first load "not deployed" would be a lie: the client should come back.
            raise GatewayNotReadyError("the gateway is starting and has not loaded its routing specs yet")
        if live is None and model in self.table.spec_errors:
            raise GatewayNotReadyError(
                f"the routing spec of {model!r} could not be loaded yet: {self.table.spec_errors[model]}"
            )
        if live is None:
            deployed = ", ".join(sorted(self.table.models)) or "none"
            raise UnknownModelError(f"model {model!r} is not deployed; deployed models: {deployed}")
        return live

    def _pinned(self, live: LiveModel, version: int) -> Variant:
        variant = live.pinned(version)
        if variant is None:
            listed = ", ".join(str(v) for v in live.spec.versions())
            raise UnknownModelError(
                f"version {version} of {live.spec.model!r} is not deployed; deployed versions: {listed}"
            )
        return variant

    def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        """KServe v2 model metadata, from the manifest's signature (no backend round trip)."""
        live = self.live(model)
        chosen = (
            version if version is not None else live.strategy.route(RouteRequest("metadata")).primary.version
        )
        if version is not None:
            self._pinned(live, version)
        signature = live.signatures[chosen]
        metadata: dict[str, Any] = {
            "name": model,
            "versions": [str(v) for v in live.spec.versions()],
            "platform": "flywheel",
            "inputs": [spec.protocol_view() for spec in signature.inputs],
            "outputs": [spec.protocol_view() for spec in signature.outputs],
        }
        if signature.max_batch_size is not None:
            # The shapes keep -1 for the batch; this says how far it may go.
            metadata["parameters"] = {"max_batch_size": signature.max_batch_size}
        return metadata

    def signature(self, model: str, version: int | None = None) -> Signature:
        live = self.live(model)
        if version is None:
            version = live.spec.routable()[0].version
        self._pinned(live, version)
        return live.signatures[version]

    async def model_ready(self, model: str, version: int | None = None) -> bool:
        live = self.table.get(model)
        if live is None:
            return False
        variants = [self._pinned(live, version)] if version is not None else live.spec.routable()
        for variant in variants:
            backend = self.backends.get(variant.backend)
            if backend is None or not await backend.ready(model, variant.version):
                return False
        return True

    def server_ready(self) -> bool:
        return self.table.loaded_once.is_set()

    # Inference ---------------------------------------------------------------------------------
    async def infer(
        self,
        model: str,
        inputs: Tensors,
        *,
        version: int | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        coerce: bool = False,
    ) -> InferenceOutcome:
        if request_id is None or request_id == "":
            request_id = uuid.uuid4().hex
        try:
            if not valid_request_id(request_id):
                raise InvalidInputError(f"request ids must be 1-{MAX_REQUEST_ID} printable ASCII characters")
            live = self.live(model)
            if version is None:
                route = live.strategy.route(RouteRequest(request_id, headers or {}))
            else:
                route = Route(self._pinned(live, version))
            inputs = check_signature(model, live.signatures[route.primary.version], inputs, coerce)
        except BackendError as error:
            self.metrics.errors.labels(
                model if model in self.table.models else "", "", type(error).__name__
            ).inc()
            raise
        in_flight = self.metrics.in_flight_for(model)
        in_flight.inc()
        started = time.perf_counter()
        try:
            outputs, variant = await self._call(live, route.primary, inputs, allow_failover=version is None)
        except BackendError as error:
            self.metrics.errors.labels(model, route.primary.name, type(error).__name__).inc()
            raise
        finally:
            in_flight.dec()
        elapsed = time.perf_counter() - started
        children = self.metrics.variant(model, variant.name, variant.version, variant.backend)
        children.requests.inc()
        children.latency.observe(elapsed)
        if route.shadow is not None:
            if self._shadows_in_flight < self.max_shadows_in_flight:
                self._shadows_in_flight += 1
                self._spawn(self._shadow(live, route.shadow, inputs, outputs, elapsed))
            else:
                # A slow shadow must not eat the connections the callers' requests need.
                self.metrics.shadow_requests.labels(model, route.shadow.name, "dropped").inc()
        self.sampler.maybe_record(live.profiles.get(variant.version), model, variant.version, inputs, outputs)
        self._remember(request_id, model, variant.name, outputs)
        return InferenceOutcome(outputs, variant, request_id)

    async def _call(
        self, live: LiveModel, variant: Variant, inputs: Tensors, allow_failover: bool
    ) -> tuple[Tensors, Variant]:
        deadline = time.monotonic() + self.timeout_s
        candidates = [variant]
        if allow_failover and live.spec.retry_unavailable:
            candidates += live.strategy.fallbacks(variant)
        for attempt, candidate in enumerate(candidates):
            backend = self.backends.get(candidate.backend)
            try:
                if backend is None:
                    raise BackendUnavailableError(f"no {candidate.backend} adapter is configured")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendUnavailableError(f"no answer from {candidate.name} within {self.timeout_s}s")
                try:
                    outputs = await asyncio.wait_for(
                        backend.infer(live.spec.model, candidate.version, inputs), remaining
                    )
                except ModelNotLoadedError as error:
                    # The spec deploys it, so the server lost it (a restart): reload it now, and
                    # meanwhile treat the server like an unavailable one.
                    self.table.request_reload(live.spec.model)
                    raise VersionReloadingError(
                        f"version {candidate.version} of {live.spec.model!r} is deployed but "
                        f"{candidate.backend} has not loaded it (yet); the gateway is reloading it: "
                        f"{error.message}"
                    ) from None
                check_finite_outputs(live.spec.model, candidate, outputs)
                return outputs, candidate
            except TimeoutError:
                raise BackendUnavailableError(
                    f"{candidate.name} on {candidate.backend} did not answer within {self.timeout_s}s"
                ) from None
            except BackendUnavailableError as error:
                if attempt + 1 >= len(candidates):
                    raise
                successor = candidates[attempt + 1]
                log.warning("%s unavailable (%s), failing over to %s", candidate.name, error, successor.name)
                self.metrics.retries.labels(live.spec.model, candidate.name, successor.name).inc()
        raise AssertionError("unreachable: the loop returns or raises")

    async def _shadow(
        self, live: LiveModel, shadow: Variant, inputs: Tensors, primary: Tensors, primary_s: float
    ) -> None:
        """Off the caller's path: its errors are counted, never raised."""
        try:
            await self._shadow_once(live, shadow, inputs, primary, primary_s)
        finally:
            self._shadows_in_flight -= 1

    async def _shadow_once(
        self, live: LiveModel, shadow: Variant, inputs: Tensors, primary: Tensors, primary_s: float
    ) -> None:
        model = live.spec.model
        started = time.perf_counter()
        try:
            backend = self.backends[shadow.backend]
            outputs = await asyncio.wait_for(backend.infer(model, shadow.version, inputs), self.timeout_s)
        except (BackendError, KeyError, TimeoutError) as error:
            self.metrics.shadow_requests.labels(model, shadow.name, type(error).__name__).inc()
            return
        elapsed = time.perf_counter() - started
        self.metrics.shadow_requests.labels(model, shadow.name, "ok").inc()
        self.metrics.shadow_latency_delta.labels(model, shadow.name).observe(elapsed - primary_s)
        for name, array in primary.items():
            if name in outputs and outputs[name].shape == array.shape:
                difference = float(np.mean(np.abs(outputs[name].astype(np.float64) - array)))
                self.metrics.shadow_disagreement.labels(model, shadow.name).observe(difference)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for shadow copies in flight (shutdown and tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # Feedback ----------------------------------------------------------------------------------
    def _remember(self, request_id: str, model: str, variant: str, outputs: Tensors) -> None:
        first = next(iter(outputs.values()), None)
        prediction = float(first.reshape(-1)[0]) if first is not None and first.size else float("nan")
        self._served[request_id] = ServedRequest(model, variant, prediction)
        if len(self._served) > self.feedback_memory:
            self._served.popitem(last=False)

    def feedback(
        self, model: str, request_id: str, reward: float | None, label: float | None
    ) -> dict[str, Any]:
        """Credit the variant that served ``request_id``.

        ``reward`` in [0, 1] is used as is, once per request id. A ``label`` (the realised value)
        becomes a reward of 1 when the prediction had the label's sign and 0 otherwise: for the
        forecaster, whether it called the direction of the next day's return.
        """
        live = self.live(model)
        if (reward is None) == (label is None):
            raise InvalidInputError('feedback needs exactly one of "reward" or "label"')
        served = self._served.get(request_id)
        if served is None or served.model != model:
            raise UnknownModelError(
                f"request {request_id!r} of {model!r} is unknown here (too old, or served by another replica)"
            )
        if reward is None:
            assert label is not None
            reward = 1.0 if np.sign(label) == np.sign(served.prediction) else 0.0
        if not 0.0 <= reward <= 1.0:
            raise InvalidInputError(f"reward must be within [0, 1], got {reward}")
        # One reward per served request: repeating feedback must not steer the bandit.
        del self._served[request_id]
        live.strategy.record_reward(served.variant, reward)
        self.metrics.feedback.labels(model, served.variant).inc()
        self.metrics.reward.labels(model, served.variant).inc(reward)
        return {"id": request_id, "variant": served.variant, "reward": reward}
