"""Alert -> retrain: Alertmanager's webhook in, one Airflow DAG run per drift episode out.

The bridge is transport-free; the admin API mounts it at ``POST /admin/alerts``.

- **What triggers.** Firing alerts whose name is in ``retrain_alerts`` (FeatureDrift and
  PredictionDrift by default) and that carry a ``model`` label. Resolved alerts and other names
  are recorded and trigger nothing.
- **One run per episode.** All of a model's firing alerts in a notification make one trigger. Its
  ``dag_run_id`` comes from the earliest-started alert's fingerprint and start time, so
  Alertmanager's repeats, a second drifting feature joining later and several gateway replicas
  all name the same run, and Airflow answers 409 for every copy after the first.
- **Never lost.** A trigger is first written to a durable outbox in the object store (one object
  per run id, created with a conditional put, shared by every gateway replica), then delivered.
  When Airflow is down, delivery is retried with exponential backoff until it answers; a crash
  between Airflow's answer and the outbox update leads to one more attempt, which gets 409 -
  never a second run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from model_store.backends.base import ObjectStorage
from model_store.errors import ObjectNotFoundError, PreconditionFailedError

log = logging.getLogger(__name__)
#: Airflow's default ``allowed_run_id_pattern`` is ``^[A-Za-z0-9_.~:+-]+$``; keep to a subset.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class WebhookAlert(BaseModel):
    """One alert of Alertmanager's webhook payload (version 4); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime  # Alertmanager always sends a zone; a naive time is refused
    fingerprint: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F]+$")


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[WebhookAlert] = Field(max_length=10_000)


@dataclass(frozen=True)
class RetrainTrigger:
    dag_run_id: str
    model: str
    reason: str
    alerts: list[dict[str, str]]

    def conf(self) -> dict[str, Any]:
        """The DAG run's conf: which model, why, and the labels of the alerts behind it."""
        return {"model": self.model, "reason": self.reason, "alert_labels": self.alerts}


def run_id_for(alert: WebhookAlert) -> str:
    started = alert.startsAt.astimezone(UTC).strftime("%Y%m%dT%H%M%S")  # one instant, one id
    name = _UNSAFE.sub("_", alert.labels.get("alertname", "alert"))[:60]
    model = _UNSAFE.sub("_", alert.labels.get("model", ""))[:80]
    return f"alert__{model}__{name}__{alert.fingerprint.lower()}__{started}"


def triggers_from_payload(
    payload: WebhookPayload, retrain_alerts: set[str]
) -> tuple[list[RetrainTrigger], list[str]]:
    """(triggers, reasons the other alerts were ignored)."""
    by_model: dict[str, list[WebhookAlert]] = {}
    ignored = []
    for alert in payload.alerts:
        name = alert.labels.get("alertname", "")
        if alert.status != "firing":
            ignored.append(f"{name} {alert.fingerprint}: resolved")
        elif name not in retrain_alerts:
            ignored.append(f"{name} {alert.fingerprint}: not a retraining alert")
        elif not alert.labels.get("model"):
            ignored.append(f"{name} {alert.fingerprint}: no model label")
        else:
            by_model.setdefault(alert.labels["model"], []).append(alert)
    triggers = []
    for model, alerts in sorted(by_model.items()):
        alerts.sort(key=lambda item: (item.startsAt, item.fingerprint))
        names = sorted({alert.labels["alertname"] for alert in alerts})
        features = sorted({alert.labels["feature"] for alert in alerts if "feature" in alert.labels})
        reason = ", ".join(names) + (f" on {', '.join(features)}" if features else "")
        triggers.append(RetrainTrigger(run_id_for(alerts[0]), model, reason, [a.labels for a in alerts]))
    return triggers, ignored


@dataclass
class OutboxEntry:
    trigger: RetrainTrigger
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    outcome: str | None = None  # created | exists, once delivered
    delivered_at: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> OutboxEntry:
        raw = json.loads(data)
        return cls(**{**raw, "trigger": RetrainTrigger(**raw["trigger"])})


@dataclass
class Outbox:
    """Pending triggers under ``<prefix>pending/``, delivered ones under ``<prefix>delivered/``; one
    object per run id, in the object store every gateway replica shares.

    A trigger is created with a conditional put (if absent), so two replicas given the same alert
    record it once; either may deliver it, and Airflow's 409 on the run id makes a second delivery
    harmless. A replica that dies for good leaves its entries for the others.
    """

    storage: ObjectStorage
    prefix: str = "outbox/retrain/"
    retry_max_s: float = 60.0
    retry_base_s: float = 1.0
    clock: Callable[[], float] = time.time

    def _key(self, folder: str, run_id: str) -> str:
        return f"{self.prefix}{folder}/{run_id}.json"

    def add(self, trigger: RetrainTrigger) -> bool:
        """Record ``trigger``; False when its run id is already pending or delivered."""
        if self.storage.etag(self._key("delivered", trigger.dag_run_id)) is not None:
            return False
        try:
            self.storage.put_if_absent(
                self._key("pending", trigger.dag_run_id), OutboxEntry(trigger, self.clock()).to_json()
            )
        except PreconditionFailedError:
            return False
        return True

    def pending(self) -> list[OutboxEntry]:
        return self._read("pending")

    def delivered(self) -> list[OutboxEntry]:
        return self._read("delivered")

    def _read(self, folder: str) -> list[OutboxEntry]:
        return [entry for entry, _ in self._read_with_etags(folder)]

    def _read_with_etags(self, folder: str) -> list[tuple[OutboxEntry, str]]:
        entries = []
        for key in sorted(self.storage.list_keys(f"{self.prefix}{folder}/")):
            try:
                stored = self.storage.get(key)
                entries.append((OutboxEntry.from_json(stored.data), stored.etag))
            except ObjectNotFoundError:
                continue  # delivered meanwhile (by another replica, say)
            except (ValueError, TypeError, KeyError) as error:
                # An unreadable entry must not block the others: set it aside for a person.
                corrupt = f"{self.prefix}corrupt/{key.rsplit('/', 1)[-1]}"
                with contextlib.suppress(ObjectNotFoundError):
                    self.storage.put(corrupt, self.storage.get(key).data)
                self.storage.delete(key)
                log.error("retrain outbox entry %s is unreadable (%s); moved to %s", key, error, corrupt)
        return sorted(entries, key=lambda pair: pair[0].created_at)

    def deliver_due(
        self, send: Callable[[RetrainTrigger], str], on_outcome: Callable[[OutboxEntry], None] | None = None
    ) -> list[OutboxEntry]:
        """Try every pending entry whose backoff has passed; returns the entries tried."""
        tried = []
        for entry, etag in self._read_with_etags("pending"):
            now = self.clock()
            if entry.next_attempt_at > now:
                continue
            entry.attempts += 1
            run_id = entry.trigger.dag_run_id
            try:
                entry.outcome = send(entry.trigger)
            except Exception as error:
                entry.last_error = f"{type(error).__name__}: {error}"[:500]
                delay = min(self.retry_max_s, self.retry_base_s * 2 ** (entry.attempts - 1))
                entry.next_attempt_at = now + delay
                try:  # by CAS: another replica may have delivered it meanwhile; never bring it back
                    self.storage.put_if_match(self._key("pending", run_id), entry.to_json(), etag)
                except (PreconditionFailedError, ObjectNotFoundError):
                    continue
            else:
                entry.delivered_at, entry.last_error = now, None
                # Delivered first, then no longer pending: a crash in between means one more
                # attempt, which Airflow answers 409 - never a lost or a second run.
                self.storage.put(self._key("delivered", run_id), entry.to_json())
                self.storage.delete(self._key("pending", run_id))
            tried.append(entry)
            if on_outcome is not None:
                on_outcome(entry)
        return tried


@dataclass
class BridgeResult:
    queued: list[RetrainTrigger]
    duplicates: list[RetrainTrigger]
    ignored: list[str]

    def as_dict(self) -> dict[str, Any]:
        def runs(triggers: list[RetrainTrigger]) -> list[dict[str, str]]:
            return [{"model": t.model, "dag_run_id": t.dag_run_id, "reason": t.reason} for t in triggers]

        return {"queued": runs(self.queued), "duplicates": runs(self.duplicates), "ignored": self.ignored}


class RetrainBridge:
    """Alertmanager payloads in, outbox entries out; ``deliver`` sends them to Airflow."""

    def __init__(
        self,
        outbox: Outbox,
        send: Callable[[RetrainTrigger], str],
        retrain_alerts: set[str],
        on_outcome: Callable[[OutboxEntry], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.send = send
        self.retrain_alerts = retrain_alerts
        self.on_outcome = on_outcome

    def accept(self, payload: WebhookPayload) -> BridgeResult:
        triggers, ignored = triggers_from_payload(payload, self.retrain_alerts)
        result = BridgeResult([], [], ignored)
        for trigger in triggers:
            (result.queued if self.outbox.add(trigger) else result.duplicates).append(trigger)
        return result

    def deliver(self) -> list[OutboxEntry]:
        return self.outbox.deliver_due(self.send, self.on_outcome)

    def status(self) -> dict[str, Any]:
        def show(entry: OutboxEntry) -> dict[str, Any]:
            return {**asdict(entry), "trigger": {**asdict(entry.trigger), "conf": entry.trigger.conf()}}

        return {
            "pending": [show(entry) for entry in self.outbox.pending()],
            "delivered": [show(entry) for entry in self.outbox.delivered()[-50:]],
        }
