"""The closing half of `make demo`: drift -> alert -> retrain -> canary -> promote, timed.

Run by deploy/local/demo.sh once v1 serves. Drifted data lands in S3 (a new regime), and live
traffic shifts the same way: it is the new data's own windows. The script then watches, without
acting, as the drift exporter raises PSI, Prometheus fires FeatureDrift, Alertmanager calls the
retrain bridge, the bridge triggers the Airflow DAG, the DAG retrains on the new data and starts
a canary, and the rollout controller promotes the new version. It ends with a timeline a person
can read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from flywheel.airflow_client import AirflowClient
from flywheel.settings import FlywheelSettings
from flywheel.stack.credentials import admin_token, airflow_password
from model_store import ModelStore
from monitoring.traffic import replay, send_traffic
from tasks.stock_forecast.synthetic import regime_windows

console = Console()
#: The drifted batch this script lands (and whose windows it sends as live traffic).
DRIFT_BATCH: dict[str, Any] = {"symbols": 5, "start": date(2024, 1, 1), "days": 750, "seed": 7}


class Timeline:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        elapsed = time.monotonic() - self.start
        self.events.append((elapsed, what))
        console.print(f"[bold green]+{elapsed:6.1f} s[/] {what}")

    def show(self, title: str) -> None:
        table = Table(title=title, title_justify="left")
        table.add_column("t (s)", justify="right")
        table.add_column("what happened")
        for elapsed, what in self.events:
            table.add_row(f"{elapsed:.0f}", what)
        console.print(table)


def wait_for(condition: Any, timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)  # polling live state with a deadline
    raise SystemExit(f"demo: timed out after {timeout_s:.0f} s waiting for {what}")


def tuning_summary(tuning: dict[str, Any] | None) -> str | None:
    """One timeline line from a manifest's ``lineage.tuning`` (None when no search ran)."""
    if not tuning:
        return None
    default = tuning.get("default_value")
    against = "" if default is None else f" against the defaults' {default:.4g}"
    return (
        f"was tuned in its run: {tuning['trials']} trials ({tuning['pruned']} pruned), validation "
        f"{tuning['metric']} {tuning['best_value']:.4g}{against}, best {tuning['best_params']}"
    )


def firing_drift(settings: FlywheelSettings, model: str) -> list[dict[str, Any]]:
    """FeatureDrift alerts firing for ``model`` (Prometheus's alerts API)."""
    alerts = httpx.get(f"{settings.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [
        a for a in alerts
        if a["labels"]["alertname"] == "FeatureDrift" and a["labels"].get("model") == model
        and a["state"] == "firing"
    ]  # fmt: skip


def delivered_triggers(http: httpx.Client, settings: FlywheelSettings, model: str) -> list[dict[str, Any]]:
    """The retrain bridge's delivered triggers for ``model`` (its outbox, admin API)."""
    delivered = http.get(f"{settings.gateway_url}/admin/retrain").json()["delivered"]
    return [entry for entry in delivered if entry["trigger"]["model"] == model]


def main() -> int:
    settings = FlywheelSettings()
    model = settings.model_name
    store = ModelStore.open(settings.resolve_store_uri(), settings)
    http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {admin_token(settings)}"})
    airflow = AirflowClient(
        settings.resolved_airflow_url, settings.airflow_username, airflow_password(settings)
    )
    champion = store.aliases(model)["champion"]
    profile = json.loads(store.read_artifact(model, champion, "profile.json"))
    signature = store.get_manifest(model, champion).signature
    # Live traffic from the new regime itself: what callers send once the world has shifted.
    drifted = replay(regime_windows(drift=True, **DRIFT_BATCH), profile, 4096, np.random.default_rng(7))
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            send_traffic(settings.gateway_url, model, signature, drifted[:512], batch_rows=32)

    timeline = Timeline()
    console.rule("drift: a new regime lands in S3 and reaches live traffic")
    batch = DRIFT_BATCH
    subprocess.run(
        [sys.executable, "-m", "flywheel", "data", "generate", "--symbols", str(batch["symbols"]),
         "--days", str(batch["days"]), "--start", str(batch["start"]), "--seed", str(batch["seed"]),
         "--drift", "--json"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    landing = f"s3://{settings.raw_bucket}/{settings.raw_prefix}"
    timeline.mark(f"drift onset: new data under {landing}, live inputs shifted")

    def psi() -> dict[str, float]:
        text = httpx.get(f"http://{settings.host}:{settings.drift_exporter_port}/metrics", timeout=10).text
        return {
            line.split('feature="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("flywheel_feature_psi{") and f'version="{champion}"' in line
        }

    values = wait_for(lambda: {f: v for f, v in psi().items() if v >= 0.2}, 300, "PSI over 0.2")
    timeline.mark("drift exporter: PSI " + ", ".join(f"{f} {v:.2f}" for f, v in sorted(values.items())))

    alerts = wait_for(lambda: firing_drift(settings, model), 300, "FeatureDrift to fire")
    timeline.mark(f"Prometheus: FeatureDrift firing on {', '.join(a['labels']['feature'] for a in alerts)}")
    entry = wait_for(
        lambda: delivered_triggers(http, settings, model), 120, "the retrain bridge to trigger Airflow"
    )[-1]
    run_id = entry["trigger"]["dag_run_id"]
    timeline.mark(f"Alertmanager -> retrain bridge -> Airflow: run {run_id} ({entry['outcome']})")

    def finished() -> str | None:
        state = airflow.dag_run(settings.retrain_dag_id, run_id)["state"]
        return state if state in ("success", "failed") else None

    state = wait_for(finished, 900, "the retraining run", interval_s=2)
    tasks = {t.task_id: t.state for t in airflow.task_states(settings.retrain_dag_id, run_id)}
    timeline.mark(f"Airflow run {state}: " + ", ".join(f"{k}={v}" for k, v in tasks.items()))
    if state != "success" or tasks.get("deploy") != "success":
        stop.set()
        console.print("[red]the retraining run did not deploy a new version; see Airflow's task logs[/]")
        return 1
    new_version = max(store.list_versions(model))
    timeline.mark(f"v{new_version} published (gate passed) and deployed as a canary")
    if tuned := tuning_summary(store.get_manifest(model, new_version).lineage.tuning):
        timeline.mark(f"v{new_version} {tuned}")

    def promoted() -> bool:
        spec = http.get(f"{settings.gateway_url}/admin/deployments/{model}").json()
        rollout = spec.get("rollout") or {}
        if rollout.get("status") == "rolled_back":
            raise SystemExit(f"demo: the canary was rolled back: {rollout.get('last_verdict')}")
        return [(v["version"], v["weight"]) for v in spec["variants"]] == [(new_version, 100.0)]

    wait_for(promoted, 600, "the canary to promote itself")
    timeline.mark(f"rollout controller: v{new_version} promoted, serving 100 % (champion -> v{new_version})")
    promoted_after = timeline.events[-1][0]

    def share_of_new_version() -> float | None:
        """The dashboard's traffic-share query (a 1-minute rate) for the new version's variant."""
        query = f'sum by (variant) (rate(flywheel_gateway_requests_total{{model="{model}"}}[1m]))'
        rows = httpx.get(f"{settings.prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
        rates = {r["metric"].get("variant", ""): float(r["value"][1]) for r in rows.json()["data"]["result"]}
        total = sum(rates.values())
        share = sum(v for k, v in rates.items() if k.endswith(f"-v{new_version}")) / total if total else 0.0
        return share if share >= 0.99 else None

    # Traffic keeps flowing until Prometheus's 1-minute rates show the promotion, so the rendered
    # traffic-share panel ends at 100 % instead of mid-climb.
    wait_for(share_of_new_version, 150, "Prometheus to see all traffic on the new version", interval_s=2)
    timeline.mark(f"Prometheus: traffic share of v{new_version} at 100 % (the dashboard's 1-minute rate)")
    stop.set()
    sender.join(timeout=30)

    timeline.show("the loop, timed from drift onset")
    console.print(f"[bold]drift onset -> v{new_version} serving 100 %: {promoted_after:.0f} s[/] "
                  f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
