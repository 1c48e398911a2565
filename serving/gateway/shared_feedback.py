"""Feedback that counts whichever gateway replica served the request, and bandit arms in the store.

- **Attribution tokens.** Every answer carries ``x-flywheel-attribution``: what feedback needs to
  credit the request (model, variant, the first row's prediction, output kind), signed with a
  key every replica derives from the admin token. Feedback for a request this replica did not
  serve (or served before a restart) is credited from the token; a forged or altered one is 400.
- **One reward per request, across replicas.** The first feedback for a request id creates
  ``feedback/<model>/<digest of the id>.json`` with a conditional put; a repeat, on any replica,
  is refused with 409.
- **Shared arms.** A bandit's arm totals live in ``bandit/<model>.json``, changed only by
  compare-and-swap (a lost race is re-read and re-applied, never overwritten); every replica
  routes with the same totals, and a restart loses none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass

import orjson

from model_store.backends.base import ObjectStorage
from model_store.errors import ObjectNotFoundError, PreconditionFailedError
from model_store.manifest import OutputKind
from serving.backends.base import BackendError, BackendUnavailableError, InvalidInputError

log = logging.getLogger(__name__)
#: How often a compare-and-swap of the arm totals is retried after losing a race.
CAS_ATTEMPTS = 50


class FeedbackRecordedError(BackendError):
    """Feedback for this request id was already recorded (on this or another replica)."""

    status = 409


@dataclass(frozen=True)
class ServedRequest:
    model: str
    variant: str
    #: The first row's value (regression) or its most probable class index (classification).
    prediction: float
    kind: OutputKind
    #: A classifier's class count (the width of its output), for checking labels.
    classes: int = 0


class AttributionSigner:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"flywheel-attribution-v1", hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.digest(self._key, payload, "sha256")[:18]).decode()

    def token(self, request_id: str, served: ServedRequest) -> str:
        payload = orjson.dumps(
            [request_id, served.model, served.variant, served.prediction, served.kind.value, served.classes]
        )
        return f"{base64.urlsafe_b64encode(payload).decode().rstrip('=')}.{self._mac(payload)}"

    def read(self, token: str, request_id: str, model: str) -> ServedRequest:
        """The served request a token vouches for; InvalidInputError unless it is genuine and fits."""
        body, _, mac = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            offered = mac.encode("utf-8", "surrogateescape")
            valid = hmac.compare_digest(offered, self._mac(payload).encode())
            fields = orjson.loads(payload) if valid else None
        except (ValueError, TypeError, UnicodeError, orjson.JSONDecodeError):
            fields = None
        if not isinstance(fields, list) or len(fields) != 6:
            raise InvalidInputError("the attribution token is not one this platform issued")
        served_id, served_model, variant, prediction, kind, classes = fields
        if served_id != request_id or served_model != model:
            raise InvalidInputError(
                f"the attribution token is for another request, not {request_id!r} of {model!r}"
            )
        return ServedRequest(served_model, variant, float(prediction), OutputKind(kind), int(classes))


class FeedbackLedger:
    """Which request ids already got their one reward, in the store every replica shares."""

    def __init__(self, storage: ObjectStorage, prefix: str = "feedback/") -> None:
        self.storage = storage
        self.prefix = prefix

    def _key(self, model: str, request_id: str) -> str:
        return f"{self.prefix}{model}/{hashlib.sha256(request_id.encode()).hexdigest()[:40]}.json"

    def claim(self, model: str, request_id: str, variant: str, reward: float) -> bool:
        """True for the first feedback on this request id; False for every later one."""
        record = orjson.dumps({"id": request_id, "variant": variant, "reward": reward})
        try:
            self.storage.put_if_absent(self._key(model, request_id), record)
        except PreconditionFailedError:
            return False
        return True

    def release(self, model: str, request_id: str) -> None:
        """Forget a claim whose reward could not be recorded, so a retry counts."""
        self.storage.delete(self._key(model, request_id))


Arms = dict[str, tuple[float, float]]  # variant -> (successes, failures)


class SharedArms:
    """A bandit's arm totals per model, in ``bandit/<model>.json``, changed by CAS only."""

    def __init__(self, storage: ObjectStorage, prefix: str = "bandit/") -> None:
        self.storage = storage
        self.prefix = prefix

    def _key(self, model: str) -> str:
        return f"{self.prefix}{model}.json"

    def read(self, model: str) -> tuple[Arms, str | None]:
        try:
            stored = self.storage.get(self._key(model))
        except ObjectNotFoundError:
            return {}, None
        raw = orjson.loads(stored.data)
        return {variant: (float(s), float(f)) for variant, (s, f) in raw.items()}, stored.etag

    def etag(self, model: str) -> str | None:
        return self.storage.etag(self._key(model))

    def add(self, model: str, variant: str, reward: float) -> Arms:
        """Add one reward to ``variant``'s arm; returns the totals it was added to."""
        for attempt in range(CAS_ATTEMPTS):
            arms, etag = self.read(model)
            successes, failures = arms.get(variant, (0.0, 0.0))
            arms[variant] = (successes + reward, failures + 1.0 - reward)
            data = orjson.dumps({name: list(totals) for name, totals in arms.items()})
            try:
                if etag is None:
                    self.storage.put_if_absent(self._key(model), data)
                else:
                    self.storage.put_if_match(self._key(model), data, etag)
            except PreconditionFailedError:
                # Another replica wrote first: re-read and re-apply, after a short jittered pause
                # so racing replicas spread out instead of colliding again.
                log.debug("bandit arms of %s changed meanwhile (another replica); re-reading", model)
                time.sleep(random.uniform(0, 0.001 * (attempt + 1)))
                continue
            return arms
        raise BackendUnavailableError(
            f"the bandit arms of {model} kept changing under {CAS_ATTEMPTS} writers; not recorded, retry"
        )
