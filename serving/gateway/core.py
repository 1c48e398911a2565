"""The gateway's transport-free core: route, validate, call the backend, fail over, measure.

REST and gRPC both call :meth:`GatewayCore.infer` with named numpy arrays and get back an
:class:`InferenceOutcome`; neither knows how routing works, and the core knows nothing of HTTP
or gRPC. Errors are the adapters' :class:`BackendError` family, whose ``status`` the skins map.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.manifest import OutputKind, OutputSpec, Signature
from serving.backends.base import (
    BackendError,
    BackendUnavailableError,
    InvalidInputError,
    ModelBackend,
    ModelNotLoadedError,
    Tensors,
    VersionReloadingError,
)
from serving.gateway.breaker import CircuitBreakers
from serving.gateway.capture import CaptureWriter
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.routing_table import LiveModel, RoutingTable
from serving.gateway.sampling import ProfileSampler
from serving.gateway.shared_feedback import (
    AttributionSigner,
    FeedbackLedger,
    FeedbackRecordedError,
    ServedRequest,
    SharedArms,
)
from serving.gateway.validation import check_finite_outputs, check_signature
from serving.protocols.v2 import MAX_REQUEST_ID, valid_request_id
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
    #: Signed: lets feedback reaching any gateway replica credit this request (shared_feedback.py).
    attribution: str | None = None
    #: The variant the strategy routed to, when its server failed and another one answered.
    failed_over_from: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "x-request-id": self.request_id,
            "x-flywheel-variant": self.variant.name,
            "x-flywheel-version": str(self.variant.version),
            "x-flywheel-backend": self.variant.backend,
        }
        if self.attribution is not None:
            headers["x-flywheel-attribution"] = self.attribution
        if self.failed_over_from is not None:
            headers["x-flywheel-failover-from"] = self.failed_over_from
        return headers


class GatewayCore:
    def __init__(
        self,
        table: RoutingTable,
        backends: Mapping[str, ModelBackend],
        metrics: GatewayMetrics,
        sampler: ProfileSampler,
        timeout_s: float,
        feedback_memory: int = 100_000,
        signer: AttributionSigner | None = None,
        ledger: FeedbackLedger | None = None,
        arms: SharedArms | None = None,
        capture: CaptureWriter | None = None,
    ) -> None:
        self.signer, self.ledger, self.arms = signer, ledger, arms
        self.capture = capture
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
        self.breakers = CircuitBreakers(cool_down_s=1.0)
        self._last_failover_log: dict[tuple[str, str], float] = {}

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
        if self.table.get(model) is None:
            await self.table.lookup_missing(model)
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
            request_id = secrets.token_hex(16)  # uuid4's 32 hex digits, at a quarter of its cost
        try:
            if not valid_request_id(request_id):
                raise InvalidInputError(f"request ids must be 1-{MAX_REQUEST_ID} printable ASCII characters")
            if self.table.get(model) is None:
                await self.table.lookup_missing(model)
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
        output = live.outputs.get(variant.version)
        if self.capture is not None:
            classification = output is not None and output.kind is OutputKind.CLASSIFICATION
            self.capture.offer(model, variant.version, variant.name, variant.backend, request_id, inputs,
                               outputs, elapsed, classification, headers)  # fmt: skip
        served = self._remember(request_id, model, variant.name, outputs, output)
        token = self.signer.token(request_id, served) if self.signer is not None else None
        failed_over_from = route.primary.name if variant.name != route.primary.name else None
        return InferenceOutcome(outputs, variant, request_id, token, failed_over_from)

    async def _call(
        self, live: LiveModel, variant: Variant, inputs: Tensors, allow_failover: bool
    ) -> tuple[Tensors, Variant]:
        """Ask the routed variant's server; on an unavailable one, the spec's other variants.

        While failover targets remain, an attempt gets half the remaining time, so a server that
        accepts connections but never answers (shutting down, starting) leaves time to fail over.
        A variant whose server just failed has its circuit breaker open (``serving.gateway.breaker``):
        routed requests try the others first instead of each waiting on it again. Skipping it
        still counts as a failover away from it, which the rollout analysis reads.
        """
        model = live.spec.model
        deadline = time.monotonic() + self.timeout_s
        candidates = [variant]
        if allow_failover and live.spec.retry_unavailable:
            candidates += live.strategy.fallbacks(variant)
            candidates = self._healthy_first(model, candidates)
            if candidates[0].name != variant.name:
                # Not a failure of this request: the breaker saw the failure already.
                self.metrics.breaker_skips.labels(model, variant.name).inc()
        for attempt, candidate in enumerate(candidates):
            backend = self.backends.get(candidate.backend)
            last = attempt + 1 >= len(candidates)
            key = (model, candidate.name)
            trial = self.breakers.begin(key)
            attempt_started = time.monotonic()
            try:
                if backend is None:
                    raise BackendUnavailableError(f"no {candidate.backend} adapter is configured")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendUnavailableError(f"no answer from {candidate.name} within {self.timeout_s}s")
                # Half the time while a healthy alternative remains, to have time to fail over.
                alternative = not last and (
                    not self.breakers.any_open
                    or any(self.breakers.available((model, c.name)) for c in candidates[attempt + 1 :])
                )
                budget = remaining / 2 if alternative else remaining
                try:
                    # asyncio.timeout, not wait_for: no extra task per request (docs/benchmarks.md).
                    async with asyncio.timeout(budget):
                        outputs = await backend.infer(model, candidate.version, inputs)
                except TimeoutError:
                    raise BackendUnavailableError(
                        f"{candidate.name} on {candidate.backend} did not answer within {budget:.1f}s"
                    ) from None
                except ModelNotLoadedError as error:
                    # The spec deploys it, so the server lost it (a restart): its model agent
                    # reloads it; meanwhile treat the server like an unavailable one.
                    self.table.request_reload(model)
                    raise VersionReloadingError(
                        f"version {candidate.version} of {model!r} is deployed but no "
                        f"{candidate.backend} replica holds it right now; its model agents are "
                        f"(re)loading it: {error.message}"
                    ) from None
                self.breakers.success(key, attempt_started)
                check_finite_outputs(model, candidate, outputs)
                return outputs, candidate
            except BackendUnavailableError as error:
                self.breakers.failure(key)
                if last:
                    raise
                successor = candidates[attempt + 1]
                self._log_failover(key, error, successor)
                self.metrics.retries.labels(model, candidate.name, successor.name).inc()
            finally:
                if trial:
                    self.breakers.end_trial(key)
        raise AssertionError("unreachable: the loop returns or raises")

    def _healthy_first(self, model: str, candidates: list[Variant]) -> list[Variant]:
        if not self.breakers.any_open:
            return candidates
        healthy = [c for c in candidates if self.breakers.available((model, c.name))]
        return healthy + [c for c in candidates if c not in healthy]

    def _log_failover(self, key: tuple[str, str], error: Exception, successor: Variant) -> None:
        """One line per variant every 5 s: under load a dead server would flood the log."""
        now = time.monotonic()
        if now - self._last_failover_log.get(key, -math.inf) >= 5.0:
            self._last_failover_log[key] = now
            log.warning("%s unavailable (%s), failing over to %s", key[1], error, successor.name)

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
    def _remember(
        self, request_id: str, model: str, variant: str, outputs: Tensors, output: OutputSpec | None
    ) -> ServedRequest:
        kind = output.kind if output is not None else OutputKind.REGRESSION
        first = next(iter(outputs.values()), None)
        classes = 0
        if first is None or not first.size:
            prediction = float("nan")
        elif kind is OutputKind.CLASSIFICATION:
            row = first.reshape(len(first), -1)[0]
            prediction, classes = float(np.argmax(row)), len(row)
        else:
            prediction = float(first.reshape(-1)[0])
        served = ServedRequest(model, variant, prediction, kind, classes)
        self._served[request_id] = served
        if len(self._served) > self.feedback_memory:
            self._served.popitem(last=False)
        return served

    async def feedback(
        self,
        model: str,
        request_id: str,
        reward: float | None,
        label: float | None,
        attribution: str | None = None,
    ) -> dict[str, Any]:
        """Credit the variant that served ``request_id``.

        ``reward`` in [0, 1] is used as is, once per request id. A ``label`` becomes a reward by
        the version's output kind (its manifest): for a classifier, 1 when the label is the class
        index the first row predicted; for a regression, 1 when the prediction had the label's
        sign (it called the direction of the change, say of a return), else 0. A request served
        by another replica (or before a restart) is credited from its ``attribution`` token.
        """
        live = self.live(model)
        if (reward is None) == (label is None):
            raise InvalidInputError('feedback needs exactly one of "reward" or "label"')
        served = self._served.get(request_id)
        if (served is None or served.model != model) and attribution and self.signer is not None:
            served = self.signer.read(attribution, request_id, model)
        if served is None or served.model != model:
            raise UnknownModelError(
                f"request {request_id!r} of {model!r} is unknown here (too old, or served by another "
                'replica: send its x-flywheel-attribution header as "attribution")'
            )
        if reward is None:
            assert label is not None
            if served.kind is OutputKind.CLASSIFICATION:
                if not float(label).is_integer() or not 0 <= label < served.classes:
                    raise InvalidInputError(
                        f"a label of {model} is a class index from 0 to {served.classes - 1}, got {label}"
                    )
                reward = 1.0 if label == served.prediction else 0.0
            else:
                reward = 1.0 if np.sign(label) == np.sign(served.prediction) else 0.0
        if not 0.0 <= reward <= 1.0:
            raise InvalidInputError(f"reward must be within [0, 1], got {reward}")
        # One reward per served request, on every replica: repeats must not steer the bandit.
        if self.ledger is not None:
            first = await asyncio.to_thread(self.ledger.claim, model, request_id, served.variant, reward)
            if not first:
                self._served.pop(request_id, None)
                raise FeedbackRecordedError(f"feedback for request {request_id!r} was already recorded")
        self._served.pop(request_id, None)
        if self.arms is not None and live.spec.strategy == "bandit":
            try:
                totals = await asyncio.to_thread(self.arms.add, model, served.variant, reward)
            except BaseException:
                if self.ledger is not None:  # not counted: the caller may send it again
                    await asyncio.to_thread(self.ledger.release, model, request_id)
                raise
            live.strategy.load_shared(totals)
        else:
            live.strategy.record_reward(served.variant, reward)
        self.metrics.feedback.labels(model, served.variant).inc()
        self.metrics.reward.labels(model, served.variant).inc(reward)
        return {"id": request_id, "variant": served.variant, "reward": reward}
