"""Routing specs in the model store, written only by compare-and-swap.

Two guards stack up. The writer names the revision it read (``expected_revision``): if the spec
moved on since, the write is refused with :class:`StaleRevisionError` (HTTP 409), because the
writer decided on stale facts. Underneath, the object itself is replaced with a conditional put
on its ETag, so two writers holding the same revision cannot both win. Without an expected
revision (the rollout controller's small adjustments), a lost race re-reads and re-applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from model_store.backends.base import ObjectStorage
from model_store.documents import JsonDocument
from model_store.errors import InvalidNameError, PreconditionFailedError
from model_store.names import validate_name
from serving.routing.spec import HistoryEntry, RoutingSpec, SpecError
from serving.routing.strategies import build_strategy

PREFIX = "deployments/"


class StaleRevisionError(Exception):
    """The spec changed since the writer read it; re-read and decide again."""

    def __init__(self, model: str, expected: int, current: int, winner: Any = None) -> None:
        self.model, self.expected, self.current = model, expected, current
        won = ""
        if winner is not None:  # the history entry of the change that got there first
            won = (
                f" (r{winner.revision} by {winner.actor} at {winner.at:%Y-%m-%dT%H:%M:%SZ}: {winner.action})"
            )
        super().__init__(
            f"routing spec of {model!r} is at revision {current}, not {expected}: someone else changed "
            f"it{won}; re-read it and retry"
        )


class SpecNotFoundError(LookupError):
    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"model {model!r} has no routing spec; deploy a version first")


class _LostRace(Exception):
    """The ETag moved between read and write with no expected revision to blame: retry."""


class SpecStore:
    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    @staticmethod
    def key(model: str) -> str:
        return f"{PREFIX}{validate_name(model)}.json"

    def models(self) -> list[str]:
        """Models with a spec; stray keys whose names are not valid model names are skipped."""
        names = []
        for key in self.storage.list_keys(PREFIX):
            name = key.removeprefix(PREFIX).removesuffix(".json")
            if key.endswith(".json") and "/" not in name:
                try:
                    names.append(validate_name(name))
                except InvalidNameError:
                    continue
        return sorted(names)

    def check_revision(self, model: str, expected_revision: int | None) -> None:
        """Fail early (before side effects such as loading a model) when the writer is stale."""
        if expected_revision is None:
            return
        current = self.find(model)
        revision = current.revision if current else 0
        if revision != expected_revision:
            winner = current.history[-1] if current and current.history else None
            raise StaleRevisionError(model, expected_revision, revision, winner)

    def etag(self, model: str) -> str | None:
        """Cheap change detection for gateways polling for new revisions."""
        return self.storage.etag(self.key(model))

    def get(self, model: str) -> RoutingSpec:
        return self.read(model)[0]

    def read(self, model: str) -> tuple[RoutingSpec, str | None]:
        """The spec and the ETag it was read at, in one read."""
        document, etag = JsonDocument(self.storage, self.key(model)).read_with_etag()
        if document is None:
            raise SpecNotFoundError(model)
        return RoutingSpec.model_validate(document), etag

    def find(self, model: str) -> RoutingSpec | None:
        try:
            return self.get(model)
        except SpecNotFoundError:
            return None

    def update(
        self,
        model: str,
        change: Callable[[RoutingSpec | None], RoutingSpec],
        *,
        actor: str,
        action: str,
        reason: str = "",
        metrics: dict[str, Any] | None = None,
        expected_revision: int | None = None,
    ) -> RoutingSpec:
        """Apply ``change`` to the current spec (None when there is none) and write it by CAS.

        ``change`` may raise :class:`SpecError` to refuse. The written spec gets the next
        revision and the stored history plus one entry; whatever history ``change`` returned
        is ignored, so history is append-only whoever writes.
        """
        document = JsonDocument(self.storage, self.key(model))
        attempts = 1 if expected_revision is not None else 20
        for attempt in Retrying(
            retry=retry_if_exception_type(_LostRace),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.01, max=0.2),
            reraise=True,
        ):
            with attempt:
                stored, etag = document.read_with_etag()
                current = RoutingSpec.model_validate(stored) if stored is not None else None
                current_revision = current.revision if current else 0
                if expected_revision is not None and expected_revision != current_revision:
                    winner = current.history[-1] if current and current.history else None
                    raise StaleRevisionError(model, expected_revision, current_revision, winner)
                changed = change(current.model_copy(deep=True) if current else None)
                # Re-validate: model_copy(update=...) in the operations skips field validation.
                proposed = RoutingSpec.model_validate(changed.model_dump())
                if proposed.model != model:
                    raise SpecError(f"spec is for model {proposed.model!r}, not {model!r}")
                build_strategy(proposed)  # refuses a spec its strategy cannot serve
                revision = current_revision + 1
                entry = HistoryEntry(
                    revision=revision, actor=actor, action=action, reason=reason, metrics=metrics or {}
                )
                written = proposed.model_copy(
                    update={"revision": revision, "history": [*(current.history if current else []), entry]}
                )
                try:
                    document.write(written.model_dump(mode="json"), etag)
                except PreconditionFailedError:
                    if expected_revision is not None:
                        latest = self.find(model)
                        raise StaleRevisionError(
                            model,
                            expected_revision,
                            latest.revision if latest else 0,
                            latest.history[-1] if latest and latest.history else None,
                        ) from None
                    raise _LostRace() from None
        return written
