"""``flywheel bench faults``: kill a server, the gateway, a launcher or S3 under load; count.

Runs against the live ``flywheel up`` stack. It deploys NAME's version as a two-server canary
(TorchServe 70 %, the TF runtime 30 %: failover has somewhere to go), keeps an open-loop load on
the routed path, and for each case injects the fault, repairs it as an operator would (``flywheel
up``: the same supervisor), and reports requests, failures and the seconds until the broken part
serves again. The spec NAME had before is put back at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import typer
from rich.table import Table

from flywheel.cli.bench_commands import bench_app
from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings


@bench_app.command()
def faults(
    ctx: typer.Context,
    name: str = typer.Argument("stock-forecaster", help="A model with a published version."),
    rate: float = typer.Option(150.0, "--rate", min=1, help="Routed requests per second, open loop."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Faults under steady load: what clients saw and how long each part took to serve again.

    Cases: TorchServe's launcher killed alone (its Java server lives on), TorchServe killed, the
    TF runtime killed, the gateway killed, S3 killed; each repaired by `flywheel up`.
    """
    from flywheel.cli.gateway_commands import admin_call
    from flywheel.cli.models_commands import open_store
    from flywheel.cli.stack_commands import supervisor_for
    from flywheel.stack.process import ProcessRecord
    from loadtests.fault_bench import OpenLoopLoad, kill_group, kill_pid, run_case, wait_until
    from loadtests.gateway_bench import infer_body
    from serving.backends.factory import build_backend

    settings: FlywheelSettings = ctx.obj
    store = open_store(settings)
    versions = store.list_versions(name)
    if not versions:
        fail(f"{name} has no published version; run the pipeline or `flywheel models import` first", as_json)
    version = store.aliases(name).get("champion") or versions[-1]
    original = admin_call(settings, "GET", f"/deployments/{name}", as_json, missing_ok=True)
    with console.status(f"deploying {name} v{version}: TorchServe 70 %, the TF runtime 30 %"):
        admin_call(
            settings,
            "POST",
            f"/deployments/{name}/deploy",
            as_json,
            json={"version": version, "backend": "torchserve", "strategy": "single", "reason": "bench"},
        )
        admin_call(settings, "POST", f"/deployments/{name}/deploy", as_json,
                   json={"version": version, "backend": "tfserving", "strategy": "canary", "weight": 30,
                         "reason": "bench"})  # fmt: skip
    supervisor = supervisor_for(settings)

    def record(service: str) -> ProcessRecord:
        return ProcessRecord.from_file(settings.run_dir / f"{service}.json")

    def repair() -> None:
        supervisor.up()

    def server_ready(kind: str) -> Callable[[], bool]:
        def ready() -> bool:
            async def ask() -> bool:
                adapter = build_backend(kind, settings, store)
                try:
                    return await adapter.ready(name, version)
                finally:
                    await adapter.aclose()

            return asyncio.run(ask())

        return ready

    def answers(url: str) -> Callable[[], bool]:
        def check() -> bool:
            try:
                return httpx.post(
                    url, content=body, headers={"Content-Type": "application/json"}, timeout=5
                ).is_success
            except httpx.HTTPError:
                return False

        return check

    body = infer_body(store.get_manifest(name, version).signature)
    routed = f"{settings.gateway_url}/v2/models/{name}/infer"
    cases: list[tuple[str, Callable[[], None], Callable[[], bool]]] = [
        ("TorchServe launcher SIGKILLed alone", lambda: kill_pid(record("torchserve")),
         server_ready("torchserve")),
        ("TorchServe SIGKILLed", lambda: kill_group(record("torchserve")), server_ready("torchserve")),
        ("TF runtime SIGKILLed", lambda: kill_group(record("tfserving")), server_ready("tfserving")),
        ("gateway SIGKILLed", lambda: kill_group(record("gateway")), answers(routed)),
        ("S3 SIGKILLed", lambda: kill_group(record("s3")), lambda: supervisor.status()[0].state == "running"),
    ]  # fmt: skip
    results = []
    try:
        with OpenLoopLoad(routed, body, rate) as load:
            wait_until(lambda: len(load.outcomes) >= rate * 3, 30)  # three seconds of calm first
            for label, fault, recovered in cases:
                with console.status(f"{label}: injecting, repairing with `flywheel up`, measuring"):
                    results.append(run_case(load, label, fault, repair, recovered))
                wait_until(answers(routed), 60)
                load.settle()  # the next case starts calm: no backlog from this one
    finally:
        if original:
            spec = {key: value for key, value in original.items() if key not in ("revision", "history")}
            current = admin_call(settings, "GET", f"/deployments/{name}", as_json)
            restore = {"expected_revision": current["revision"], "spec": spec, "reason": "bench: restore"}
            admin_call(settings, "PUT", f"/deployments/{name}", as_json, json=restore)
    data: dict[str, Any] = {"model": name, "version": version, "rate": rate, "cases": results}

    def render(data: dict[str, Any]) -> None:
        table = Table(title=f"{name} v{version}: faults under {rate:g} req/s (routed, open loop)")
        columns = (
            "case",
            "requests",
            "failed",
            "failures",
            "p99 ms",
            "max ms",
            "up took s",
            "fault to serving s",
        )
        for column in columns:
            table.add_column(column, justify="left" if column in ("case", "failures") else "right")
        for row in data["cases"]:
            failures = ", ".join(f"{key}: {count}" for key, count in row["failures"].items()) or "-"
            table.add_row(
                row["case"], str(row["requests"]), str(row["failed"]), failures, str(row["recovered_s"])
            )
        console.print(table)

    emit(data, as_json, render)
