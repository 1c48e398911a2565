"""Replay before the canary: the candidate answers the champion's recent real traffic, offline.

The last ``replay_requests`` requests the champion served and the gateways captured are sent, in
batches, to the candidate on a real server of its own (private ports and a staging store, the
machinery of ``training/smoke.py``; Triton when the package has it, it starts quickest). Its
answers are compared with the champion's captured ones:

- **disagreement**: the share of requests whose answer differs (a classifier's class; for a
  regression, by more than ``REGRESSION_TOLERANCE`` of the champion's prediction spread);
- **prediction shift**: PSI of the candidate's answers against the champion's, and against the
  candidate's own validation profile (the canary's yardstick: after a drift retrain the stale
  champion is the one that is off, so only the latter can fail);
- **quality where labels were joined**: accuracy (classifier) or RMSE (regression) of both on the
  same labelled requests.

The replay fails, and the candidate never receives live traffic, when its answers are not
finite, when it is worse than the champion on enough joined labels, or when its answers break
from its own profile as the canary's analysis would fail them. The verdict goes to the run area
and, for a published version, into its gate record.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from model_store import ModelStore
from model_store.capture import CaptureReader, decode_tensors
from model_store.labels import read_joined
from model_store.manifest import OutputKind
from model_store.store import artifacts_from_directory
from monitoring.drift import psi

REGRESSION_TOLERANCE = 0.5  # of the champion's prediction standard deviation
BATCH_ROWS = 256
MAX_PSI = 3.0  # the canary's default max_prediction_psi
MIN_LABELS = 20
ACCURACY_SLACK = 0.02
RMSE_SLACK = 1.05


def _histogram(values: np.ndarray, edges: list[float] | None, classes: int | None) -> np.ndarray:
    if classes is not None:
        return np.bincount(values.astype(int), minlength=classes).astype(np.float64)
    assert edges is not None
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).astype(
        np.float64
    )


def recent_traffic(store: ModelStore, model: str, version: int, requests: int, days: int) -> Any:
    """The last ``requests`` captured requests ``version`` answered (a pandas frame, oldest first)."""
    since = datetime.now(UTC).date() - timedelta(days=days)
    columns = ["request_id", "version", "served_at", "inputs", "outputs"]
    frame = CaptureReader(store.storage).read(model, since=since, columns=columns).to_pandas()
    frame = frame[frame["version"] == version].sort_values("served_at")
    return frame.tail(requests)


def _first_rows(tensors: list[dict[str, np.ndarray]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Requests' tensors stacked along the batch axis, and each request's first row's index."""
    arrays = [entry[name] for entry in tensors]
    starts = np.cumsum([0] + [len(array) for array in arrays[:-1]])
    return np.concatenate(arrays), starts


def serve_candidate(
    context: Any, package_dir: Path, inputs: dict[str, np.ndarray], start_timeout_s: float = 240
) -> tuple[dict[str, np.ndarray], str, float]:
    """The candidate's answers to ``inputs`` from a private real server; (outputs, kind, seconds)."""
    from flywheel.stack.process import stop_process
    from flywheel.stack.sockets import free_port
    from serving.backends.factory import build_backend
    from training.package import packaged_backends
    from training.smoke import _PORTS, _START_ORDER, _start

    kinds = [str(kind) for kind in packaged_backends()]
    kind = sorted(kinds, key=_START_ORDER.index)[0]
    with tempfile.TemporaryDirectory(prefix="flywheel-replay-") as scratch:
        workdir = Path(scratch)
        staging = ModelStore.open(f"file://{workdir / 'store'}")
        manifest = staging.publish(
            context.model, artifacts_from_directory(package_dir), framework="pytorch+tensorflow",
            task=context.task.name, output=context.task.output, backends=packaged_backends(),
            signature=context.task.signature(),
        )  # fmt: skip
        ports = {name: free_port() for name in _PORTS[kind]}
        private = context.settings.model_copy(
            update={**ports, "var_dir": workdir / "var", "host": "127.0.0.1"}
        )
        context.progress(f"starting a private {kind} for the candidate")
        records = _start(private, [kind], workdir, start_timeout_s)
        try:

            async def score() -> tuple[dict[str, np.ndarray], float]:
                backend = build_backend(kind, private, staging)
                try:
                    await backend.load(manifest.name, manifest.version)
                    rows = len(next(iter(inputs.values())))
                    started = time.perf_counter()
                    parts: list[dict[str, np.ndarray]] = []
                    for offset in range(0, rows, BATCH_ROWS):
                        batch = {name: array[offset : offset + BATCH_ROWS] for name, array in inputs.items()}
                        parts.append(await backend.infer(manifest.name, manifest.version, batch))
                    seconds = time.perf_counter() - started
                finally:
                    await backend.aclose()
                return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}, seconds

            context.progress(f"replaying {len(next(iter(inputs.values())))} rows through {kind}")
            outputs, seconds = asyncio.run(score())
        finally:
            for record in records.values():
                stop_process(record, 30)
    return outputs, kind, seconds


def compare(
    candidate: np.ndarray,
    champion: np.ndarray,
    classification: bool,
    profile: dict[str, Any],
    labels: np.ndarray | None,
    labelled: np.ndarray | None,
) -> dict[str, Any]:
    """The replay's verdict from first-row answers (``labelled`` indexes the rows that have labels)."""
    reasons: list[str] = []
    report: dict[str, Any] = {"requests": len(candidate)}
    if not np.all(np.isfinite(candidate)):
        reasons.append("the candidate answered non-finite values (NaN or infinity) to real requests")
        candidate = np.nan_to_num(candidate)
    if classification:
        mine, theirs = candidate.argmax(axis=1), champion.argmax(axis=1)
        report["disagreement"] = round(float(np.mean(mine != theirs)), 4)
        classes = candidate.shape[1]
        own = np.asarray((profile.get("prediction") or {}).get("frequencies", []), dtype=np.float64)
        live, base = _histogram(mine, None, classes), _histogram(theirs, None, classes)
        live_own = live
    else:
        mine, theirs = candidate.reshape(-1), champion.reshape(-1)
        spread = float(np.std(theirs)) or 1e-9
        report["disagreement"] = round(
            float(np.mean(np.abs(mine - theirs) > REGRESSION_TOLERANCE * spread)), 4
        )
        edges = sorted(set(np.quantile(theirs, [i / 10 for i in range(1, 10)]).tolist()))
        live, base = _histogram(mine, edges, None), _histogram(theirs, edges, None)
        reference = profile.get("prediction") or {}
        has_edges = "edges" in reference
        own = np.asarray(reference.get("frequencies", []) if has_edges else [], dtype=np.float64)
        live_own = _histogram(mine, reference["edges"], None) if has_edges else live
    report["psi_against_champion"] = round(psi(base / max(base.sum(), 1.0), live), 3)
    if len(own) and len(own) == len(live_own):
        against_own = psi(own, live_own)
        report["psi_against_own_profile"] = round(against_own, 3)
        if against_own > MAX_PSI:
            reasons.append(
                f"its answers break from its own validation profile (PSI {against_own:.2f} > {MAX_PSI})"
            )
    if labels is not None and labelled is not None and len(labelled) >= MIN_LABELS:
        truth = labels
        if classification:
            ours, champions = (
                float(np.mean(mine[labelled] == truth)),
                float(np.mean(theirs[labelled] == truth)),
            )
            report["labelled"] = {"requests": len(labelled), "candidate_accuracy": round(ours, 4),
                                  "champion_accuracy": round(champions, 4)}  # fmt: skip
            if ours < champions - ACCURACY_SLACK:
                reasons.append(
                    f"on {len(labelled)} joined labels its accuracy {ours:.3f} is below the "
                    f"champion's {champions:.3f}"
                )
        else:
            ours = float(np.sqrt(np.mean((mine[labelled] - truth) ** 2)))
            champions = float(np.sqrt(np.mean((theirs[labelled] - truth) ** 2)))
            report["labelled"] = {
                "requests": len(labelled),
                "candidate_rmse": ours,
                "champion_rmse": champions,
            }
            if ours > champions * RMSE_SLACK:
                reasons.append(
                    f"on {len(labelled)} joined labels its RMSE {ours:.4g} is above the "
                    f"champion's {champions:.4g}"
                )
    report["passed"] = not reasons
    report["reasons"] = reasons or ["answers finite, within its profile, and not worse on joined labels"]
    return report


def step_replay(context: Any, force: bool = False) -> dict[str, Any]:
    """Replay the champion's recent captured traffic through the packaged candidate."""
    import orjson

    settings = context.settings
    run = context.resolve_run()
    if not force and (done := run.result("replay")):
        return dict(done)
    store: ModelStore = context.store
    champion = store.aliases(context.model).get("champion")
    if champion is None or settings.replay_requests == 0:
        why = (
            "no champion has served yet" if champion is None else "replay is off (FLYWHEEL_REPLAY_REQUESTS=0)"
        )
        return run.upload_result("replay", {"skipped": True, "passed": True, "reason": why})
    traffic = recent_traffic(
        store, context.model, champion, settings.replay_requests, settings.label_join_window_days
    )
    if len(traffic) < settings.replay_min_requests:
        why = f"{len(traffic)} captured requests of v{champion}, fewer than {settings.replay_min_requests}"
        return run.upload_result("replay", {"skipped": True, "passed": True, "reason": why})
    signature = context.task.signature()
    input_names = [spec.name for spec in signature.inputs]
    output_name = signature.outputs[0].name
    try:
        decoded_in = [decode_tensors(text) for text in traffic["inputs"]]
        decoded_out = [decode_tensors(text) for text in traffic["outputs"]]
        inputs = {name: _first_rows(decoded_in, name)[0] for name in input_names}
        champion_all, starts = _first_rows(decoded_out, output_name)
    except (ValueError, KeyError) as error:
        # Traffic this candidate cannot take as it was captured (another signature, tensors kept by
        # shape only): nothing to learn from replaying it, which is no verdict on the candidate.
        why = f"the captured requests do not fit the candidate's signature: {error}"
        return run.upload_result("replay", {"skipped": True, "passed": True, "reason": why})
    with tempfile.TemporaryDirectory(prefix="flywheel-replay-package-") as scratch:
        package_dir = run.download("package", Path(scratch) / "package")
        profile = (
            orjson.loads((package_dir / "profile.json").read_bytes())
            if (package_dir / "profile.json").exists()
            else {}
        )
        try:
            outputs, kind, seconds = serve_candidate(context, package_dir, inputs)
        except Exception as error:  # its own server would not load or answer it: it fails here
            verdict = {
                "passed": False,
                "requests": len(traffic),
                "reasons": [f"its server could not serve it: {error}"],
            }
            return run.upload_result("replay", verdict)
    candidate_first = np.asarray(outputs[output_name])[starts]
    champion_first = champion_all[starts]
    classification = context.task.output.kind is OutputKind.CLASSIFICATION
    joined = read_joined(store.storage, context.model)
    labels = labelled = None
    if joined is not None and joined.num_rows:
        truth = dict(zip(joined["request_id"].to_pylist(), joined["label"].to_pylist(), strict=True))
        ids = list(traffic["request_id"])
        labelled = np.asarray([i for i, request_id in enumerate(ids) if request_id in truth], dtype=int)
        labels = np.asarray([truth[ids[i]] for i in labelled], dtype=np.float64)
    report = compare(candidate_first, champion_first, classification, profile, labels, labelled)
    report |= {"champion": champion, "server": kind, "rows": len(next(iter(inputs.values()))),
               "seconds": round(seconds, 3)}  # fmt: skip
    return run.upload_result("replay", report)
