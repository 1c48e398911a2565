"""``flywheel bench real-data``: Microsoft 1986-1999, then the crash years, through the real pipeline."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from flywheel.cli.bench_commands import bench_app
from flywheel.cli.output import JSON_OPTION, console, emit
from flywheel.settings import FlywheelSettings


@bench_app.command("real-data")
def real_data(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Train on MSFT 1986-1999, show the drift 2000-2002 brings, retrain on it; RMSE vs naive throughout.

    Needs the stack's S3 (`flywheel up`). Each run uses a model and raw prefix of its own
    (msft-<UTC time>, real/msft-<UTC time>/), so the stack's own model and data are not touched.
    """
    from tasks.stock_forecast.real_data_case import run

    settings: FlywheelSettings = ctx.obj
    with console.status("real-data case") as status:
        data = run(settings, lambda message: status.update(f"real-data case: {message}"))

    def render(data: dict[str, Any]) -> None:
        def metrics_row(label: str, report: dict[str, Any]) -> tuple[str, ...]:
            return (label, f"{report['rmse']:.5f}", f"{report['rmse_naive']:.5f}", f"{report['skill']:+.3f}",
                    f"{report['directional_accuracy']:.3f}")  # fmt: skip

        table = Table(title="RMSE of next-day return forecasts (PyTorch) against the naive zero forecast")
        for column in ("model, data", "rmse", "rmse naive", "skill", "direction"):
            table.add_column(column, justify="left" if column == "model, data" else "right")
        table.add_row(*metrics_row("v1, its 1986-1999 holdout", data["v1"]["holdout_1990s"]["pytorch"]))
        table.add_row(*metrics_row("v1, all 2000-2002 windows", data["v1_on_all_crash_windows"]))
        late = data["v2"]["holdout_late_2002"]
        if late["v1"]:
            table.add_row(*metrics_row("v1, late-2002 holdout", late["v1"]["pytorch"]))
        table.add_row(*metrics_row("v2 (retrained), late-2002 holdout", late["v2"]["pytorch"]))
        console.print(table)
        drift = Table(title="2000-2002 against v1's training profile (newest day of each window)")
        for column in ("feature", "PSI", "KS", "KS p-value"):
            drift.add_column(column, justify="left" if column == "feature" else "right")
        for name, row in data["crash_drift_vs_v1_profile"].items():
            drift.add_row(name, f"{row['psi']:.3f}", f"{row['ks']:.3f}", f"{row['ks_p']:.2g}")
        console.print(drift)
        gate = data["v2"]["gate"]
        console.print(
            f"gate for v2: {'passed' if gate['passed'] else 'failed'}: {'; '.join(gate['reasons'])}"
        )

    emit(data, as_json, render)


@bench_app.command("classifier")
def classifier(
    ctx: typer.Context,
    count: int = typer.Option(12_000, "--count", min=1000, max=60_000, help="Labelled images to land."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Time the image classifier's full retrain, ingest to publish, step by step, and its accuracy.

    Two rounds: a first model on COUNT images, then a retrain on COUNT/2 inverted images with the
    first as champion. Needs the stack's S3 (`flywheel up`); uses a model and raw prefix of its own.
    """
    from tasks.fashion_mnist.bench_case import run

    settings: FlywheelSettings = ctx.obj
    with console.status("classifier retrain") as status:
        data = run(settings, count, lambda message: status.update(f"classifier: {message}"))

    def render(data: dict[str, Any]) -> None:
        steps = list(next(iter(data["rounds"].values()))["seconds"])
        table = Table(title=f"classifier retrain on this machine, seconds per step ({data['images']} images)")
        table.add_column("round")
        for step in steps:
            table.add_column(step, justify="right")
        table.add_column("accuracy (torch / tf)", justify="right")
        for label, result in data["rounds"].items():
            accuracy = result["candidate"]
            table.add_row(
                label,
                *[f"{result['seconds'][step]:.1f}" for step in steps],
                f"{accuracy['pytorch']['accuracy']:.3f} / {accuracy['tensorflow']['accuracy']:.3f}",
            )
        console.print(table)
        cbpe_keys = ("estimated_accuracy", "realised_accuracy", "estimate_error")
        for key in (k for k in data if k.startswith("drift_detection_v")):
            version = key.removeprefix("drift_detection_")
            rows = data[key]
            drift = Table(
                title=f"drift monitor and CBPE on {version}, per injected shift (PSI; chi-squared p)"
            )
            # The profile's features (the classifier's image statistics, its confidence), as reported.
            skip = ("prediction", "drift_detected", *cbpe_keys)
            features = [name for name in next(iter(rows.values())) if name not in skip]
            for column in ("shift", *features, "prediction", "chi2 p", "drift", "CBPE acc.", "true acc."):
                drift.add_column(column, justify="left" if column == "shift" else "right")
            for shift, row in rows.items():
                estimate = row["estimated_accuracy"]
                drift.add_row(
                    shift,
                    *[f"{row[name]['psi']:.2f}" for name in features],
                    f"{row['prediction']['psi']:.2f}",
                    f"{row['prediction']['chi2_p']:.2g}",
                    "yes" if row["drift_detected"] else "no",
                    "n/a" if estimate is None else f"{estimate:.3f}",
                    f"{row['realised_accuracy']:.3f}",
                )
            console.print(drift)

    emit(data, as_json, render)
