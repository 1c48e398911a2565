"""``flywheel deploy | promote | rollback | weights | routing | predict``: the gateway from the shell.

The control-plane commands call the gateway's admin API (bearer token from settings or
``var/credentials``), so the CLI, scripts and the rollout controller share one code path and
every change lands in the routing spec's history. ``predict`` is an ordinary client of the
data plane, over REST or gRPC.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from flywheel.cli.output import JSON_OPTION, console, emit, fail
from flywheel.settings import FlywheelSettings
from flywheel.stack.credentials import admin_token
from serving.protocols.examples import v2_request

EXPECTED_REVISION = typer.Option(
    None,
    "--expected-revision",
    help="Refuse (409) unless the spec is still at this revision. Default: the revision read just "
    "before the write, so a concurrent change is reported, never overwritten.",
)
FORCE = typer.Option(
    False, "--force", help="Write over whatever the spec holds now, even if it changed meanwhile."
)
REASON = typer.Option("", "--reason", help="Why: recorded in the spec's history.")
ACTOR = typer.Option("cli", "--actor", help="Who: recorded in the spec's history.")


def admin_call(
    settings: FlywheelSettings, method: str, path: str, as_json: bool, missing_ok: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """Call the admin API; an error answer ends the command. ``missing_ok``: 404 gives ``{}``."""
    try:
        token = admin_token(settings, create=False)
    except FileNotFoundError as error:
        fail(str(error), as_json)
    try:
        response = httpx.request(
            method,
            f"{settings.gateway_url}/admin{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=settings.deploy_ready_timeout_s + 30,  # a deploy waits for every replica to load
            **kwargs,
        )
    except httpx.HTTPError as error:
        fail(f"the gateway at {settings.gateway_url} is not reachable ({error}); is the stack up?", as_json)
    if missing_ok and response.status_code == 404:
        return {}
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        fail(f"{response.status_code}: {message}", as_json)
    return dict(response.json())


def based_on(
    settings: FlywheelSettings, name: str, expected_revision: int | None, force: bool, as_json: bool
) -> int | None:
    """The revision a CLI write is based on: every write is compare-and-swap unless ``--force``.

    Without ``--expected-revision`` the command reads the spec first (no spec: revision 0), so
    two people changing one model at the same moment get one success and one 409 naming the
    change that won, instead of the later write silently replacing the earlier.
    """
    if force:
        return None
    if expected_revision is not None:
        return expected_revision
    current = admin_call(settings, "GET", f"/deployments/{name}", as_json, missing_ok=True)
    return int(current["revision"]) if current else 0


_STRATEGY_PARAMS = {
    "blue_green": ("active",),
    "shadow": ("primary", "shadow_sample_rate"),
    "ab": ("sticky_header",),
    "bandit": ("bandit_prior_alpha", "bandit_prior_beta"),
}


def _render_spec(spec: dict[str, Any]) -> None:
    table = Table(title=f"{spec['model']}: {spec['strategy']} (revision {spec['revision']})")
    for column in ("variant", "version", "backend", "weight"):
        table.add_column(column)
    for variant in spec["variants"]:
        table.add_row(variant["name"], str(variant["version"]), variant["backend"], f"{variant['weight']:g}")
    console.print(table)
    relevant = _STRATEGY_PARAMS.get(spec["strategy"], ())
    params = {key: value for key, value in spec.get("params", {}).items() if key in relevant}
    if params:
        console.print(f"params: {params}")
    for entry in spec.get("history", [])[-5:]:
        console.print(
            f"  r{entry['revision']} {entry['at'][:19]} {entry['actor']}: {entry['action']} {entry['reason']}"
        )


def deploy(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Option(..., "--version", min=1, help="Store version to deploy."),
    strategy: str = typer.Option(
        "canary",
        "--strategy",
        help="single (cut over), canary (weighted), blue_green (idle colour, promote switches), "
        "shadow (copies only), ab (sticky by header), bandit (learns from feedback).",
    ),
    backend: str = typer.Option("triton", "--backend", help="triton, torchserve or tfserving."),
    weight: float = typer.Option(None, "--weight", min=0, max=100, help="canary/ab share in percent."),
    sticky_header: str = typer.Option(None, "--sticky-header", help="ab: header that pins callers."),
    shadow_sample_rate: float = typer.Option(
        None, "--shadow-sample-rate", min=0, max=1, help="shadow: share copied."
    ),
    steps: str = typer.Option(
        None, "--steps", help="Start an automatic canary rollout through these percentages, e.g. 5,25,50,100."
    ),
    interval: str = typer.Option("30s", "--interval", help="Bake time per rollout step: 30s, 2m, 1h."),
    bake: str = typer.Option(
        None, "--bake", help="blue_green: warm green up, switch, bake this long, then retire blue (e.g. 60s)."
    ),
    expected_revision: int | None = EXPECTED_REVISION,
    force: bool = FORCE,
    reason: str = REASON,
    actor: str = ACTOR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Load VERSION on BACKEND, then route to it with STRATEGY. Compare-and-swap, recorded in history."""
    settings: FlywheelSettings = ctx.obj
    expected_revision = based_on(settings, name, expected_revision, force, as_json)
    params = {
        key: value
        for key, value in (("sticky_header", sticky_header), ("shadow_sample_rate", shadow_sample_rate))
        if value is not None
    }
    rollout: dict[str, Any] = {}
    if bake:
        try:
            rollout = {"bake_s": parse_duration(bake)}
        except ValueError as error:
            fail(f"--bake: {error}", as_json, exit_code=2)
    if steps:
        try:
            rollout = {
                "steps": [float(step) for step in steps.split(",")],
                "interval_s": parse_duration(interval),
            }
        except ValueError as error:
            fail(f"--steps/--interval: {error}", as_json, exit_code=2)
    body = {
        **rollout,
        "version": version,
        "backend": backend,
        "strategy": strategy,
        "weight": weight,
        "params": params or None,
        "expected_revision": expected_revision,
        "reason": reason,
        "actor": actor,
    }
    with console.status(f"loading {name} v{version} on {backend} and updating the routing spec"):
        spec = admin_call(settings, "POST", f"/deployments/{name}/deploy", as_json, json=body)
    emit(spec, as_json, _render_spec)


def parse_duration(text: str) -> float:
    """Seconds from 30s, 2m, 1h or a bare number of seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def promote(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    variant: str = typer.Option(None, "--variant", help="Variant to promote (default: the candidate)."),
    expected_revision: int | None = EXPECTED_REVISION,
    force: bool = FORCE,
    reason: str = REASON,
    actor: str = ACTOR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Give the candidate all traffic and make it the champion (blue-green: switch colours)."""
    expected_revision = based_on(ctx.obj, name, expected_revision, force, as_json)
    body = {"variant": variant, "expected_revision": expected_revision, "reason": reason, "actor": actor}
    emit(
        admin_call(ctx.obj, "POST", f"/deployments/{name}/promote", as_json, json=body), as_json, _render_spec
    )


def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    expected_revision: int | None = EXPECTED_REVISION,
    force: bool = FORCE,
    reason: str = REASON,
    actor: str = ACTOR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Send all traffic back to the stable variant and drop the candidate."""
    expected_revision = based_on(ctx.obj, name, expected_revision, force, as_json)
    body = {"expected_revision": expected_revision, "reason": reason, "actor": actor}
    emit(
        admin_call(ctx.obj, "POST", f"/deployments/{name}/rollback", as_json, json=body),
        as_json,
        _render_spec,
    )


def abort(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    reason: str = REASON,
    actor: str = ACTOR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Stop a running rollout: all traffic back to the stable variant, recorded in history."""
    body = {"reason": reason, "actor": actor}
    emit(admin_call(ctx.obj, "POST", f"/deployments/{name}/abort", as_json, json=body), as_json, _render_spec)


rollout_app = typer.Typer(help="Automatic rollouts: their live progress.", no_args_is_help=True)


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Where the model's rollout stands: step, weight, time baked, the last analysis."""
    spec = admin_call(ctx.obj, "GET", f"/deployments/{name}", as_json)
    rollout = spec.get("rollout")
    if rollout is None:
        fail(
            f"{name} has no rollout; start one with flywheel deploy {name} --version V --steps 5,25,50,100",
            as_json,
        )
    decisions = [entry for entry in spec["history"] if entry["actor"] == "rollout-controller"]
    data = {"model": name, "revision": spec["revision"], "rollout": rollout, "decisions": decisions[-10:]}

    def render(data: dict[str, Any]) -> None:
        state = data["rollout"]
        done = state["step"] + (1 if state["status"] == "promoted" else 0)
        bar = "".join("#" if index < done else "." for index in range(len(state["steps"])))
        bar = escape(f"[{bar}]")
        console.print(
            f"[bold]{name}[/]: {state['candidate']} vs {state['stable']}  {bar}  "
            f"step {state['step'] + 1}/{len(state['steps'])} at {state['steps'][state['step']]:g}%  "
            f"status [bold]{state['status']}[/]"
        )
        if state.get("last_verdict"):
            console.print(f"last analysis: {state['last_verdict']}")
        for entry in data["decisions"]:
            console.print(f"  r{entry['revision']} {entry['at'][:19]} {entry['action']}: {entry['reason']}")

    emit(data, as_json, render)


def weights(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    assignments: list[str] = typer.Argument(..., help="VARIANT=PERCENT pairs, e.g. triton-v2=25."),
    expected_revision: int | None = EXPECTED_REVISION,
    force: bool = FORCE,
    reason: str = REASON,
    actor: str = ACTOR,
    as_json: bool = JSON_OPTION,
) -> None:
    """Set traffic weights by hand (canary, ab)."""
    expected_revision = based_on(ctx.obj, name, expected_revision, force, as_json)
    parsed: dict[str, float] = {}
    for assignment in assignments:
        variant, _, value = assignment.partition("=")
        try:
            parsed[variant] = float(value)
        except ValueError:
            fail(f"expected VARIANT=PERCENT, got {assignment!r}", as_json, exit_code=2)
    body = {"weights": parsed, "expected_revision": expected_revision, "reason": reason, "actor": actor}
    emit(
        admin_call(ctx.obj, "POST", f"/deployments/{name}/weights", as_json, json=body), as_json, _render_spec
    )


def routing(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Model name; all deployments when left out."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a routing spec with its recent history, or every deployment's live split."""
    if name:
        emit(admin_call(ctx.obj, "GET", f"/deployments/{name}", as_json), as_json, _render_spec)
    else:
        emit(
            admin_call(ctx.obj, "GET", "/routing", as_json),
            as_json,
            lambda data: console.print_json(data=data),
        )


def _model_inputs(
    settings: FlywheelSettings, name: str, version: int | None, as_json: bool
) -> list[dict[str, Any]]:
    """The model's inputs as its v2 metadata on the gateway describes them."""
    path = f"/versions/{version}" if version else ""
    try:
        response = httpx.get(f"{settings.gateway_url}/v2/models/{name}{path}", timeout=30)
    except httpx.HTTPError as error:
        fail(f"the gateway at {settings.gateway_url} is not reachable ({error}); is the stack up?", as_json)
    if response.status_code >= 400:
        fail(f"{response.status_code}: {response.json().get('error', response.text)}", as_json)
    inputs = list(response.json().get("inputs") or [])
    if not inputs:
        fail(f"{name} publishes no input signature; pass --input with a JSON body", as_json)
    return inputs


def _load_inputs(
    input_file: Path | None, rows: int, specs: list[dict[str, Any]], as_json: bool
) -> dict[str, np.ndarray]:
    """--input's instances for a one-input model, else example inputs built from the signature."""
    from serving.protocols.examples import example_inputs
    from serving.protocols.v2 import V2_TO_NUMPY

    if input_file is None:
        return example_inputs(specs, rows)
    if len(specs) != 1:
        fail(f"--input takes instances for a one-input model; this one has {len(specs)} inputs", as_json)
    document = json.loads(input_file.read_text())
    instances = document.get("instances", document.get("inputs")) if isinstance(document, dict) else document
    dtype = V2_TO_NUMPY.get(specs[0]["datatype"], np.dtype(np.float32))
    return {specs[0]["name"]: np.asarray(instances, dtype=dtype)}


def predict(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Option(None, "--version", min=1, help="Pin a version (default: routed)."),
    input_file: Path = typer.Option(
        None, "--input", exists=True, dir_okay=False, help='JSON: {"instances": [...]} or a list of windows.'
    ),
    rows: int = typer.Option(
        1, "--rows", min=1, help="Rows of example inputs (built from the model's signature) without --input."
    ),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Send the request N times and show the split."),
    protocol: str = typer.Option("rest", "--protocol", help="rest (KServe v2 JSON) or grpc."),
    header: list[str] = typer.Option([], "--header", help="Extra request header NAME=VALUE (ab routing)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Send a prediction through the gateway and show which variant answered."""
    settings: FlywheelSettings = ctx.obj
    if protocol not in ("rest", "grpc"):
        fail("--protocol must be rest or grpc", as_json, exit_code=2)
    specs = _model_inputs(settings, name, version, as_json)
    datatypes = {str(spec["name"]): str(spec["datatype"]) for spec in specs}
    arrays = _load_inputs(input_file, rows, specs, as_json)
    headers = dict(item.split("=", 1) for item in header if "=" in item)
    split: collections.Counter[str] = collections.Counter()
    last: dict[str, Any] = {}
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:  # one keep-alive connection for every repeat
        for _ in range(repeat):
            last = _predict_once(
                client, settings, name, version, arrays, datatypes, protocol, headers, as_json
            )
            split[last["variant"]] += 1
    elapsed = time.perf_counter() - started
    result = {**last, "split": dict(split), "requests": repeat, "mean_latency_ms": 1000 * elapsed / repeat}

    def render(data: dict[str, Any]) -> None:
        console.print(
            f"[bold]{name}[/] v{data['version']} via [bold]{data['variant']}[/] (request {data['id']})"
        )
        predictions = np.asarray(data["predictions"])
        rows = predictions.reshape(len(predictions), -1) if predictions.ndim else predictions.reshape(1, 1)
        if rows.shape[1] == 1:
            console.print(f"predictions: {rows[:, 0].round(6).tolist()}")
        else:  # a row of scores per input (a classifier's probabilities): show each row's best column
            for index, row in enumerate(rows):
                console.print(
                    f"row {index}: column {int(row.argmax())} ({row.max():.4f}); {row.round(4).tolist()}"
                )
        if repeat > 1:
            console.print(
                f"split over {repeat} requests: {dict(split)}; mean {data['mean_latency_ms']:.1f} ms"
            )

    emit(result, as_json, render)


def _predict_once(
    client: httpx.Client,
    settings: FlywheelSettings,
    name: str,
    version: int | None,
    arrays: dict[str, np.ndarray],
    datatypes: dict[str, str],
    protocol: str,
    headers: dict[str, str],
    as_json: bool,
) -> dict[str, Any]:
    if protocol == "grpc":
        import tritonclient.grpc as triton_grpc
        from tritonclient.utils import InferenceServerException

        grpc_client = triton_grpc.InferenceServerClient(f"{settings.host}:{settings.gateway_grpc_port}")
        tensors = []
        for input_name, array in arrays.items():
            tensor = triton_grpc.InferInput(input_name, list(array.shape), datatypes[input_name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        try:
            result = grpc_client.infer(name, tensors, model_version=str(version or ""), headers=headers)
        except InferenceServerException as error:
            fail(f"{error.status()}: {error.message()}", as_json)
        finally:
            grpc_client.close()
        response = result.get_response(as_json=True)
        output = response["outputs"][0]["name"]
        return {
            "id": response.get("id", ""),
            "version": int(response["model_version"]),
            "variant": response["parameters"]["variant"]["string_param"],
            "predictions": result.as_numpy(output).tolist(),
        }
    path = f"/versions/{version}" if version else ""
    body = v2_request(arrays, datatypes)
    try:
        http = client.post(
            f"{settings.gateway_url}/v2/models/{name}{path}/infer", json=body, headers=headers, timeout=60
        )
    except httpx.HTTPError as error:
        fail(f"the gateway at {settings.gateway_url} is not reachable ({error}); is the stack up?", as_json)
    if http.status_code >= 400:
        fail(f"{http.status_code}: {http.json().get('error', http.text)}", as_json)
    payload = http.json()
    return {
        "id": payload["id"],
        "version": int(payload["model_version"]),
        "variant": http.headers["x-flywheel-variant"],
        # In the output's shape (REST carries it flat), as the gRPC answer is.
        "predictions": np.asarray(payload["outputs"][0]["data"])
        .reshape(payload["outputs"][0]["shape"])
        .tolist(),
    }


def register(app: typer.Typer) -> None:
    for command in (deploy, promote, rollback, abort, weights, routing, predict):
        app.command()(command)
    app.add_typer(rollout_app, name="rollout")
