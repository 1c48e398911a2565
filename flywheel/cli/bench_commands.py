"""``flywheel bench ...``: side-by-side measurements, recorded in docs/benchmarks.md."""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from flywheel.cli.output import JSON_OPTION, console, emit
from flywheel.settings import FlywheelSettings

bench_app = typer.Typer(
    help="Benchmarks that compare alternatives side by side in one run.", no_args_is_help=True
)


@bench_app.command()
def preprocess(
    ctx: typer.Context,
    rows: int = typer.Option(1_000_000, "--rows", min=10_000, help="Rows of OHLCV data (symbols x days)."),
    days: int = typer.Option(2500, "--days", min=100, help="Trading days per symbol."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs of each, after one warm-up run."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Spark preprocessing (warm session) next to a pandas baseline, on the same generated rows."""
    from tasks.stock_forecast.pandas_features import pandas_features
    from tasks.stock_forecast.preprocess import run_preprocess
    from tasks.stock_forecast.synthetic import generate
    from training.spark import build_spark_session

    settings: FlywheelSettings = ctx.obj
    symbols = max(1, rows // days)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as scratch:
        raw = Path(scratch) / "raw"
        raw.mkdir()
        with console.status(f"generating {symbols * days:,} rows ({symbols} symbols x {days} days)"):
            for symbol, frame in generate(symbols, date(2010, 1, 4), days, drift=False, seed=1).items():
                frame.to_csv(raw / f"{symbol}.csv", index=False)
        with console.status("starting Spark"):
            started = time.perf_counter()
            spark = build_spark_session(
                master=settings.resolved_spark_master,
                driver_memory=settings.spark_driver_memory,
                log_file=settings.log_dir / "spark.log",
            )
            session_start_s = time.perf_counter() - started
        spark.sparkContext.setLogLevel("ERROR")

        def timed(label: str, work: object) -> list[float]:
            samples = []
            for attempt in range(repeats + 1):
                with console.status(f"{label}: run {attempt + 1} of {repeats + 1} (the first warms up)"):
                    began = time.perf_counter()
                    work()  # type: ignore[operator]
                    if attempt:
                        samples.append(time.perf_counter() - began)
            return samples

        spark_samples = timed("Spark", lambda: run_preprocess(spark, raw, Path(scratch) / "out"))
        pandas_samples = timed("pandas", lambda: pandas_features(raw))
        spark.stop()
    result: dict[str, Any] = {
        "rows": symbols * days,
        "symbols": symbols,
        "repeats": repeats,
        "spark_master": settings.resolved_spark_master,
        "spark_session_start_s": round(session_start_s, 2),
        "spark_full_job_s": {"median": round(statistics.median(spark_samples), 2), "samples": spark_samples},
        "pandas_features_only_s": {
            "median": round(statistics.median(pandas_samples), 2),
            "samples": pandas_samples,
        },
    }

    def render(data: dict[str, Any]) -> None:
        table = Table(title=f"Preprocessing {data['rows']:,} rows, median of {repeats} warm runs")
        table.add_column("engine")
        table.add_column("what it does")
        table.add_column("seconds", justify="right")
        full_job = "parse, quarantine, features, split, fit, profile, Parquet"
        table.add_row(f"Spark {data['spark_master']}", full_job, str(data["spark_full_job_s"]["median"]))
        table.add_row(
            "pandas", "read CSVs, features and target only", str(data["pandas_features_only_s"]["median"])
        )
        console.print(table)
        console.print(f"Spark session start (not included): {data['spark_session_start_s']} s")

    emit(result, as_json, render)


@bench_app.command()
def backends(
    ctx: typer.Context,
    reference: str = typer.Argument("stock-forecaster:latest", help="NAME[:VERSION] to load and measure."),
    requests: int = typer.Option(300, "--requests", min=20, help="Sequential single requests per server."),
    concurrent_requests: int = typer.Option(
        1200, "--concurrent-requests", min=50, help="Requests at concurrency 8."
    ),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=64),
    as_json: bool = JSON_OPTION,
) -> None:
    """Per server, in one run: single-request p50/p99 latency and throughput at concurrency 8 (1 row each).

    Goes through each server's Flywheel adapter and native protocol, on a running stack (`flywheel up`).
    """
    import asyncio

    import numpy as np

    from flywheel.cli.backends_commands import sample_inputs
    from flywheel.cli.models_commands import open_store, split_reference
    from serving.backends.factory import build_backend
    from serving.backends.registry import backend_kinds

    settings: FlywheelSettings = ctx.obj
    name, version_reference = split_reference(reference)
    store = open_store(settings)
    version = store.resolve(name, version_reference)
    inputs = sample_inputs(store, name, version, rows=1, seed=0)

    async def measure(kind: str) -> dict[str, Any]:
        adapter = build_backend(kind, settings, store)
        try:
            await adapter.load(name, version)
            for _ in range(20):  # warm-up: connections, worker threads, lazy imports
                await adapter.infer(name, version, inputs)
            latencies = []
            for _ in range(requests):
                began = time.perf_counter()
                await adapter.infer(name, version, inputs)
                latencies.append(time.perf_counter() - began)
            remaining = concurrent_requests

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await adapter.infer(name, version, inputs)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - began
        finally:
            await adapter.aclose()
        milliseconds = np.asarray(latencies) * 1000
        return {
            "p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
            "p99_ms": round(float(np.percentile(milliseconds, 99)), 3),
            "throughput_rps": round(concurrent_requests / elapsed, 1),
        }

    results: dict[str, Any] = {}
    for kind in backend_kinds():
        with console.status(f"measuring {kind}"):
            results[kind] = asyncio.run(measure(kind))
    data = {"model": name, "version": version, "concurrency": concurrency, "servers": results}

    def render(data: dict[str, Any]) -> None:
        table = Table(title=f"{name}:{version}, one 10x8 window per request")
        for column in ("server", "p50 ms", "p99 ms", f"req/s at concurrency {concurrency}"):
            table.add_column(column, justify="right" if column != "server" else "left")
        for kind, row in data["servers"].items():
            table.add_row(kind, str(row["p50_ms"]), str(row["p99_ms"]), str(row["throughput_rps"]))
        console.print(table)

    emit(data, as_json, render)


@bench_app.command()
def gateway(
    ctx: typer.Context,
    name: str = typer.Argument("stock-forecaster", help="Deployed model with a variant on Triton."),
    rate: float = typer.Option(200.0, "--rate", min=1, help="Fixed-rate phase, requests per second."),
    duration_s: float = typer.Option(10.0, "--duration", min=1, help="Seconds of the fixed-rate phase."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, max=256, help="Saturation phase workers."),
    requests: int = typer.Option(3000, "--requests", min=100, help="Requests in the saturation phase."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Triton direct vs through the gateway vs through nginx (split_clients canary), in one run;
    with gateway replicas also through HAProxy to all of them.

    Reports added p50/p99 at a fixed rate and at saturation, and the gateways' CPU per request
    (summed over every replica behind the balancer) beside the balancer's own.
    Needs a running stack with NAME deployed on Triton (`flywheel deploy NAME --backend triton`).
    """

    from flywheel.cli.gateway_commands import admin_call
    from flywheel.cli.models_commands import open_store
    from flywheel.stack.process import ProcessRecord, stop_process
    from flywheel.stack.sockets import free_port
    from loadtests.gateway_bench import (
        Target,
        haproxy_config,
        infer_body,
        measure,
        nginx_config,
        start_bare_proxy,
        start_haproxy,
        start_nginx,
    )

    settings: FlywheelSettings = ctx.obj
    spec = admin_call(settings, "GET", f"/deployments/{name}", as_json)
    on_triton = [variant for variant in spec["variants"] if variant["backend"] == "triton"]
    if not on_triton:
        from flywheel.cli.output import fail

        fail(
            f"{name} has no variant on triton; run: flywheel deploy {name} --version V --backend triton",
            as_json,
        )
    version = on_triton[0]["version"]
    versions = open_store(settings).list_versions(name)
    candidate = next((v for v in reversed(versions) if v != version), version)

    stages: list[str] = []

    def stage_candidate() -> None:
        """The agents load the candidate for the nginx canary (nobody else writes into Triton)."""
        from serving.agent.report import read_reports, readiness
        from serving.agent.staging import stage

        store = open_store(settings)
        stages.append(stage(store.storage, name, candidate, "triton", ttl_s=900, actor="bench gateway"))
        deadline = time.monotonic() + 180
        while True:
            reports = read_reports(store.storage, settings.agent_stale_after_s, "triton")
            ready, problems = readiness(reports, "triton", name, candidate)
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} v{candidate} not ready on every Triton replica: {problems}")
            time.sleep(0.2)

    with console.status(f"staging {name} v{candidate} on Triton for the nginx canary"):
        stage_candidate()
    from serving.gateway.service import gateway_layouts

    layouts = gateway_layouts(settings)
    gateway_pids = [
        ProcessRecord.from_file(settings.run_dir / f"{layout.name}.json").pid for layout in layouts
    ]
    first_gateway = f"http://{settings.host}:{layouts[0].http_port}"
    triton = f"{settings.host}:{settings.triton_http_port}"
    body = infer_body(open_store(settings).get_manifest(name, version).signature)
    gateway_label = "gateway" if len(layouts) == 1 else f"one gateway replica direct ({layouts[0].name})"
    if settings.gateway_workers > 1:
        gateway_label += f", {settings.gateway_workers} workers"
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-gateway-") as scratch:
        nginx_port, haproxy_port, floor_port = free_port(), free_port(), free_port()
        split: dict[int, float] = {version: 90, candidate: 10}

        def peer_url(port: int) -> str:
            return f"http://{settings.host}:{port}"

        Path(scratch).chmod(0o755)  # nginx's workers drop root and must reach their folders
        (Path(scratch) / "nginx").mkdir()
        (Path(scratch) / "haproxy").mkdir()
        peers: list[ProcessRecord] = []  # started inside the try: a failed start stops the others
        results = {}
        try:
            config = nginx_config(Path(scratch) / "nginx", nginx_port, triton, name, split)
            peers.append(start_nginx(Path(scratch) / "nginx", config, nginx_port))
            haproxy = haproxy_config(Path(scratch) / "haproxy", haproxy_port, triton, name, split)
            peers.append(start_haproxy(Path(scratch) / "haproxy", haproxy, haproxy_port))
            peers.append(start_bare_proxy(Path(scratch), floor_port, triton))
            targets = [
                Target("direct (Triton)", f"http://{triton}/v2/models/{name}/versions/{version}/infer"),
                Target(
                    "floor: bare aiohttp proxy",
                    f"http://{settings.host}:{floor_port}/v2/models/{name}/versions/{version}/infer",
                    peers[2].pid,
                ),
                Target(
                    gateway_label,
                    f"{first_gateway}/v2/models/{name}/versions/{version}/infer",
                    gateway_pids[0],
                ),
                *(
                    [
                        Target(
                            f"HAProxy -> {len(layouts)} gateway replicas",
                            f"{settings.gateway_url}/v2/models/{name}/versions/{version}/infer",
                            gateway_pids[0],
                            tuple(gateway_pids[1:]),
                            balancer_pid=ProcessRecord.from_file(settings.run_dir / "load-balancer.json").pid,
                        )
                    ]
                    if len(layouts) > 1
                    else []
                ),
                Target("nginx split_clients", f"{peer_url(nginx_port)}/v2/models/{name}/infer", peers[0].pid),
                Target("HAProxy weighted", f"{peer_url(haproxy_port)}/v2/models/{name}/infer", peers[1].pid),
            ]  # fmt: skip
            for target in targets:
                with console.status(f"measuring {target.name}"):
                    results[target.name] = measure(target, body, rate, duration_s, concurrency, requests)
        finally:
            for peer in peers:
                stop_process(peer, 10)
            from serving.agent.staging import unstage

            for key in stages:
                unstage(open_store(settings).storage, key)
    direct = results["direct (Triton)"]
    nginx_rps = max(results["nginx split_clients"]["saturation"]["throughput_rps"], 1e-9)
    for row in results.values():
        row["share_of_nginx_throughput"] = round(row["saturation"]["throughput_rps"] / nginx_rps, 3)
        row["added_p50_ms"] = round(row["fixed_rate"]["p50_ms"] - direct["fixed_rate"]["p50_ms"], 3)
        row["added_p99_ms"] = round(row["fixed_rate"]["p99_ms"] - direct["fixed_rate"]["p99_ms"], 3)
        row["added_saturation_p50_ms"] = round(
            row["saturation"]["p50_ms"] - direct["saturation"]["p50_ms"], 3
        )
    from loadtests.gateway_bench import replica_choice_cost

    data = {
        "model": name,
        "version": version,
        "rate": rate,
        "concurrency": concurrency,
        "gateway_workers": settings.gateway_workers,
        "targets": results,
        # The per-request routing over server replicas, in-process: flat in the replica count.
        "replica_choice_us": {str(count): cost for count, cost in replica_choice_cost().items()},
    }

    def render(data: dict[str, Any]) -> None:
        table = Table(title=f"{name} v{version} on Triton, one 10x8 window per request")
        for column in (
            "path",
            f"p50 ms @{rate:g}/s",
            f"p99 ms @{rate:g}/s",
            "added p50",
            "added p99",
            f"req/s @c{concurrency}",
            "of nginx",
            "p50 ms sat.",
            "p99 ms sat.",
            "CPU µs/req",
            "LB CPU µs/req",
        ):
            table.add_column(column, justify="left" if column == "path" else "right")
        for label, row in data["targets"].items():
            table.add_row(
                label,
                str(row["fixed_rate"]["p50_ms"]),
                str(row["fixed_rate"]["p99_ms"]),
                str(row["added_p50_ms"]),
                str(row["added_p99_ms"]),
                str(row["saturation"]["throughput_rps"]),
                f"{row['share_of_nginx_throughput']:.0%}",
                str(row["saturation"]["p50_ms"]),
                str(row["saturation"]["p99_ms"]),
                str(row.get("cpu_us_per_request", "")),
                str(row.get("balancer_cpu_us_per_request", "")),
            )
        console.print(table)
        choice = ", ".join(f"{count}: {cost} µs" for count, cost in data["replica_choice_us"].items())
        console.print(f"choosing a server replica per request, by replica count: {choice}")

    emit(data, as_json, render)


def loadtest(
    ctx: typer.Context,
    users: int = typer.Option(20, "--users", "-u", min=1, help="Concurrent Locust users."),
    spawn_rate: float = typer.Option(10.0, "--spawn-rate", "-r", min=0.1, help="Users started per second."),
    run_time: str = typer.Option("60s", "--run-time", "-t", help="How long, e.g. 30s, 5m."),
    protocol: str = typer.Option("rest", "--protocol", help="rest (RestInferUser) or grpc (GrpcInferUser)."),
    model: str = typer.Option(None, "--model", help="Model to load (default: settings.model_name)."),
    csv_prefix: Path = typer.Option(None, "--csv", help="CSV prefix (default var/loadtest/<protocol>)."),
) -> None:
    """Run loadtests/locustfile.py headless against the gateway; writes Locust's CSVs."""
    import os
    import subprocess
    import sys

    settings: FlywheelSettings = ctx.obj
    if protocol not in ("rest", "grpc"):
        raise typer.BadParameter("choose rest or grpc", param_hint="--protocol")
    prefix = csv_prefix or settings.var_path / "loadtest" / protocol
    prefix.parent.mkdir(parents=True, exist_ok=True)
    user_class = "RestInferUser" if protocol == "rest" else "GrpcInferUser"
    locustfile = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "-u", str(users), "-r", str(spawn_rate), "-t", run_time,
        "--host", settings.gateway_url, "--csv", str(prefix), "--only-summary", user_class,
    ]  # fmt: skip
    environment = {
        **os.environ,
        "FLYWHEEL_LOADTEST_MODEL": model or settings.model_name,
        "FLYWHEEL_LOADTEST_GRPC": f"{settings.host}:{settings.gateway_grpc_port}",
    }
    completed = subprocess.run(command, env=environment, check=False)
    console.print(f"CSV: {prefix}_stats.csv, {prefix}_stats_history.csv, {prefix}_failures.csv")
    raise typer.Exit(completed.returncode)


@bench_app.command()
def drift(
    ctx: typer.Context,
    samples: int = typer.Option(
        1_000_000, "--samples", min=10_000, help="No-drift samples for the false-alarm run."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Drift detectors: PSI/KS cost (100 features x 1M), false alarms, detection delay, hook cost."""
    from loadtests.drift_bench import cost, detection_delay, false_alarms, sampling_cost

    with console.status("PSI and KS over 100 features x 1M samples"):
        cost_result = cost(100, 1_000_000)
    with console.status(f"false alarms in {samples:,} no-drift samples"):
        quiet = false_alarms(samples=samples)
    with console.status("detection delay of a 0.5 sigma mean shift"):
        delay = detection_delay(0.5)
    with console.status("the gateway's sampling hook"):
        hook = sampling_cost(10)
    data = {"cost": cost_result, "false_alarms": quiet, "detection": delay, "sampling_hook": hook}
    emit(data, as_json, lambda value: console.print_json(data=value))
