"""The alert -> retrain bridge against a recording Airflow endpoint (Airflow itself is not the subject
here; tests/e2e drives the real api-server): one run per drift episode, resolved alerts ignored,
nothing lost while Airflow is down, nothing doubled when a delivery is repeated."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flywheel.airflow_client import AirflowClient
from model_store.backends.file import FileStorage
from monitoring.retrain_bridge import (
    Outbox,
    RetrainBridge,
    RetrainTrigger,
    WebhookPayload,
    triggers_from_payload,
)
from tests.support import free_port

RETRAIN_ALERTS = {"FeatureDrift", "PredictionDrift"}


class RecordingAirflow:
    """Airflow's token and trigger endpoints, recording every trigger call; 409 for a known run id."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.calls: list[dict[str, Any]] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/auth/token":
                    ok = body == {"username": "flywheel", "password": "secret"}
                    self._reply(201 if ok else 401, {"access_token": "jwt"} if ok else {"detail": "no"})
                    return
                if self.headers.get("Authorization") != "Bearer jwt":
                    self._reply(401, {"detail": "not authenticated"})
                    return
                recorder.calls.append({"path": self.path, **body})
                run_id = body["dag_run_id"]
                if run_id in recorder.runs:
                    self._reply(409, {"detail": f"DAG run {run_id} already exists"})
                    return
                recorder.runs[run_id] = body
                self._reply(200, {"dag_run_id": run_id, "state": "queued"})

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def airflow() -> Iterator[RecordingAirflow]:
    recorder = RecordingAirflow(free_port())  # not started: each test decides when Airflow is "up"
    yield recorder
    recorder.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def alert(name: str, fingerprint: str, started: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": "..."},
        "startsAt": started,
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
        "generatorURL": "http://127.0.0.1:9090/graph",
    }


def payload(*alerts: dict[str, Any]) -> WebhookPayload:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return WebhookPayload.model_validate(
        {"version": "4", "status": status, "receiver": "retrain-bridge", "groupKey": "{}", "alerts": alerts}
    )


def bridge_for(airflow: RecordingAirflow, root: Path, clock: Clock) -> RetrainBridge:
    client = AirflowClient(airflow.url, "flywheel", "secret", timeout_s=2)

    def send(trigger: RetrainTrigger) -> str:
        return client.trigger("flywheel_retrain", trigger.dag_run_id, trigger.conf())

    return RetrainBridge(
        Outbox(FileStorage(root), prefix="", retry_max_s=8, clock=clock), send, RETRAIN_ALERTS
    )


def test_one_trigger_per_model_episode_and_resolved_or_foreign_alerts_trigger_nothing() -> None:
    first = alert("FeatureDrift", "aa01", "2026-11-23T10:00:00Z", model="m", version="1", feature="f1")
    later = alert("FeatureDrift", "bb02", "2026-11-23T10:02:00Z", model="m", version="1", feature="f2")
    prediction = alert("PredictionDrift", "cc03", "2026-11-23T10:05:00Z", model="m", version="1")
    other_model = alert("FeatureDrift", "dd04", "2026-11-23T10:01:00Z", model="n", version="3", feature="f1")
    resolved = alert(
        "FeatureDrift", "ee05", "2026-11-23T09:00:00Z", status="resolved", model="o", version="1"
    )
    foreign = alert("HighLatencyP99", "ff06", "2026-11-23T10:00:00Z", model="m", variant="v1")
    unlabelled = alert("FeatureDrift", "0a07", "2026-11-23T10:00:00Z", feature="f1")

    triggers, ignored = triggers_from_payload(
        payload(later, prediction, first, other_model, resolved, foreign, unlabelled), RETRAIN_ALERTS
    )
    assert [t.model for t in triggers] == ["m", "n"]
    m = triggers[0]
    # The earliest alert of the episode names the run, whatever order Alertmanager sends them in.
    assert m.dag_run_id == "alert__m__FeatureDrift__aa01__20261123T100000"
    assert m.conf() == {
        "model": "m",
        "reason": "FeatureDrift, PredictionDrift on f1, f2",
        "alert_labels": [first["labels"], later["labels"], prediction["labels"]],
    }
    assert len(ignored) == 3
    assert any("resolved" in reason for reason in ignored)
    assert any("not a retraining alert" in reason for reason in ignored)
    assert any("no model label" in reason for reason in ignored)

    # A later notification of the same episode (one more feature joined) names the same run.
    again, _ = triggers_from_payload(payload(first, later), RETRAIN_ALERTS)
    assert again[0].dag_run_id == m.dag_run_id
    # Only resolved alerts: nothing at all.
    assert triggers_from_payload(payload(resolved), RETRAIN_ALERTS)[0] == []


def test_malformed_payloads_are_rejected() -> None:
    bad = [
        {"status": "firing"},
        {"status": "firing", "alerts": [{"status": "firing", "labels": {}}]},
        {"status": "weird", "alerts": []},
        {
            "status": "firing",
            "alerts": [alert("FeatureDrift", "not-hex!", "2026-11-23T10:00:00Z", model="m")],
        },
        {"status": "firing", "alerts": [alert("FeatureDrift", "aa", "yesterday", model="m")]},
        # No zone: which instant is it? (and it could not be ordered against zoned ones)
        {"status": "firing", "alerts": [alert("FeatureDrift", "aa", "2026-11-23T10:00:00", model="m")]},
    ]
    for body in bad:
        with pytest.raises(ValueError):
            WebhookPayload.model_validate(body)


def test_one_instant_in_two_zones_names_one_run() -> None:
    utc = alert("FeatureDrift", "ab", "2026-11-23T10:00:00Z", model="m", feature="f")
    paris = alert("FeatureDrift", "ab", "2026-11-23T11:00:00+01:00", model="m", feature="f")
    [first], _ = triggers_from_payload(payload(utc), RETRAIN_ALERTS)
    [second], _ = triggers_from_payload(payload(paris), RETRAIN_ALERTS)
    assert first.dag_run_id == second.dag_run_id


def test_an_unreadable_entry_is_set_aside_and_does_not_block_the_others(
    airflow: RecordingAirflow, tmp_path: Path
) -> None:
    airflow.start()
    bridge = bridge_for(airflow, tmp_path / "outbox", Clock())
    bridge.accept(payload(alert("FeatureDrift", "ab01", "2026-11-23T10:00:00Z", model="m", feature="f")))
    (tmp_path / "outbox" / "pending" / "alert__x.json").write_text('{"from": "an older release"}')
    [entry] = bridge.deliver()
    assert entry.outcome == "created" and len(airflow.runs) == 1
    assert (tmp_path / "outbox" / "corrupt" / "alert__x.json").exists()
    assert bridge.outbox.pending() == []


def test_a_trigger_survives_an_airflow_outage_and_is_delivered_exactly_once(
    airflow: RecordingAirflow, tmp_path: Path
) -> None:
    clock = Clock()
    bridge = bridge_for(airflow, tmp_path / "outbox", clock)
    drift = payload(
        alert("FeatureDrift", "ab12", "2026-11-23T10:00:00Z", model="m", version="1", feature="f")
    )

    result = bridge.accept(drift)
    assert [t.model for t in result.queued] == ["m"] and result.duplicates == []
    # Airflow is down: the attempt fails, the entry stays with a growing backoff.
    [entry] = bridge.deliver()
    assert entry.outcome is None and "unreachable" in (entry.last_error or "")
    assert entry.next_attempt_at == clock.now + 1
    assert bridge.deliver() == [], "not retried before its backoff"
    clock.now += 1
    [entry] = bridge.deliver()
    assert entry.attempts == 2 and entry.next_attempt_at == clock.now + 2

    # Alertmanager repeats the notification meanwhile: no second entry.
    assert [t.model for t in bridge.accept(drift).duplicates] == ["m"]
    # A restarted bridge reads the same outbox: nothing is lost.
    bridge = bridge_for(airflow, tmp_path / "outbox", clock)
    assert [e.trigger.dag_run_id for e in bridge.outbox.pending()] == [entry.trigger.dag_run_id]

    airflow.start()
    clock.now += 2
    [delivered] = bridge.deliver()
    assert delivered.outcome == "created" and delivered.attempts == 3
    assert bridge.outbox.pending() == [] and len(bridge.outbox.delivered()) == 1
    assert list(airflow.runs) == [entry.trigger.dag_run_id]
    call = airflow.calls[0]
    assert call["path"] == "/api/v2/dags/flywheel_retrain/dagRuns"
    assert call["logical_date"] is None
    assert call["conf"]["model"] == "m" and call["conf"]["alert_labels"][0]["feature"] == "f"

    # Delivered already: a repeat of the alert is a duplicate and calls nobody.
    assert bridge.accept(drift).queued == []
    assert bridge.deliver() == [] and len(airflow.calls) == 1


def test_a_repeated_delivery_gets_409_and_never_a_second_run(
    airflow: RecordingAirflow, tmp_path: Path
) -> None:
    """A crash between Airflow's answer and the outbox update means one more attempt: it must not double."""
    airflow.start()
    clock = Clock()
    drift = payload(alert("PredictionDrift", "cd34", "2026-11-23T11:00:00Z", model="m", version="2"))
    # Two bridges with separate outboxes (two gateway replicas) receive the same alert.
    first = bridge_for(airflow, tmp_path / "replica-1", clock)
    second = bridge_for(airflow, tmp_path / "replica-2", clock)
    first.accept(drift)
    second.accept(drift)
    assert [e.outcome for e in first.deliver()] == ["created"]
    assert [e.outcome for e in second.deliver()] == ["exists"]
    assert len(airflow.runs) == 1 and len(airflow.calls) == 2


def test_wrong_airflow_credentials_keep_the_trigger_pending(
    airflow: RecordingAirflow, tmp_path: Path
) -> None:
    airflow.start()
    clock = Clock()
    client = AirflowClient(airflow.url, "flywheel", "wrong", timeout_s=2)
    bridge = RetrainBridge(
        Outbox(FileStorage(tmp_path), prefix="", clock=clock),
        lambda t: client.trigger("flywheel_retrain", t.dag_run_id, t.conf()),
        RETRAIN_ALERTS,
    )
    bridge.accept(payload(alert("FeatureDrift", "ef56", "2026-11-23T12:00:00Z", model="m", feature="f")))
    [entry] = bridge.deliver()
    assert entry.outcome is None and "refused the login" in (entry.last_error or "")
    assert "wrong" not in (entry.last_error or ""), "the password never lands in the outbox"
    assert len(bridge.outbox.pending()) == 1 and airflow.runs == {}


def test_two_gateway_replicas_share_one_outbox_and_make_one_run(
    airflow: RecordingAirflow, tmp_path: Path
) -> None:
    """Both replicas get the alert (Alertmanager may call either through the balancer); the one
    that took it dies before delivering; the other delivers it, once."""
    airflow.start()
    firing = payload(alert("FeatureDrift", "ff06", "2026-11-23T11:00:00Z", model="m", feature="f"))
    first = bridge_for(airflow, tmp_path / "store", Clock())
    second = bridge_for(airflow, tmp_path / "store", Clock())
    assert len(first.accept(firing).queued) == 1
    assert len(second.accept(firing).duplicates) == 1  # the same run id, recorded once
    del first  # died for good, with the trigger undelivered
    [entry] = second.deliver()
    assert entry.outcome == "created" and len(airflow.runs) == 1
    assert second.outbox.pending() == [] and len(second.outbox.delivered()) == 1
    assert len(second.accept(firing).duplicates) == 1  # delivered: a repeat is still one run
