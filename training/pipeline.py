"""The batch half of the loop as idempotent steps over store URIs.

    ingest -> preprocess -> train (pytorch, tensorflow) -> evaluate -> package -> publish

A run is keyed by its dataset snapshot (run id = snapshot id), and every step reads its inputs
from, and writes its outputs to, the run area in the store (``training/run_area.py``). A step
that already completed returns its recorded result; ``force`` runs it again. Each function
here is what one ``flywheel pipeline ...`` command and one Airflow task call.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.datasets import DatasetStore
from model_store.lineage import git_state, package_versions
from model_store.manifest import GateResult, Lineage
from model_store.store import artifacts_from_directory
from tasks.base import FRAMEWORKS, Task
from training.gate import GatePolicy, gate
from training.package import packaged_backends
from training.run_area import RunArea

log = logging.getLogger(__name__)
#: Called with a short description of what a step is doing, for progress display.
Progress = Callable[[str], None]


class GateFailedError(RuntimeError):
    """Publishing was refused because the candidate did not pass the evaluation gate."""


@dataclass
class PipelineContext:
    settings: FlywheelSettings
    store: ModelStore
    model: str
    run_id: str | None = None
    progress: Progress = lambda message: None

    @property
    def dataset(self) -> str:
        return self.settings.dataset_name or self.model

    @property
    def task(self) -> Task:
        return task_of(self.store, self.model, self.settings.default_task)

    def resolve_run(self) -> RunArea:
        """The run area of ``run_id``, or of the dataset's latest snapshot."""
        run_id = self.run_id or DatasetStore(self.store.storage).latest(self.dataset).snapshot_id
        self.run_id = run_id
        return RunArea(self.store.storage, self.model, run_id)


class NoTaskError(LookupError):
    """A model with versions that name no task (imported without --task): nothing to train or score it by."""


def task_of(store: ModelStore, model: str, default: str) -> Task:
    """The model's task: its registration, else its latest manifest's, else ``default`` for a model
    with no version yet. A model whose versions name no task is refused: guessing would train or
    score it with another task's data."""
    from tasks.registry import get_task

    registration = store.registration(model)
    if registration is not None:
        return get_task(registration["task"])
    versions = store.list_versions(model)
    if not versions:
        return get_task(default)
    recorded = store.get_manifest(model, versions[-1]).task
    if recorded is None:
        raise NoTaskError(
            f"{model} has versions but no task (imported without --task); register one with "
            f"`flywheel models register {model} --task TASK` to train or batch-score it"
        )
    return get_task(recorded)


def _scratch(folder: Path | None = None) -> tempfile.TemporaryDirectory[str]:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix="flywheel-step-", dir=folder)


def step_ingest(context: PipelineContext) -> dict[str, Any]:
    from model_store.backends.s3 import s3_client
    from training.ingest import ingest

    settings = context.settings
    task = context.task
    context.store.register(context.model, task.name, actor="pipeline")
    client = s3_client(settings)
    labelled = None
    if settings.labelled_captures_min_rows > 0:
        from training.labelled_captures import materialise

        context.progress("taking captured requests whose labels came back")
        try:
            labelled = materialise(
                settings, context.store, context.model, task, client, settings.labelled_captures_min_rows
            )
        except Exception as error:  # learning from traffic is extra: it never costs the run its data
            log.warning("labelled captured requests not taken this run: %s", error)
            labelled = {"error": str(error)}
    context.progress(f"listing s3://{settings.raw_bucket}/{settings.raw_prefix} for {task.name} data")
    result = ingest(
        client,
        settings.raw_bucket,
        settings.raw_prefix,
        context.store.storage,
        context.dataset,
        task,
    )
    if result.snapshot is None:
        unfinished = _unfinished_snapshot(context)
        if unfinished is None:
            return {"skipped": True, "reason": "no new raw objects", "already_seen": result.already_seen}
        # A run that took this data failed before publishing or a gate verdict: carry it on,
        # otherwise its objects would count as seen and never be trained on.
        context.run_id = unfinished.snapshot_id
        return {
            "skipped": False,
            "resumed": True,
            "snapshot_id": unfinished.snapshot_id,
            "new_objects": 0,
            "content_hash": unfinished.content_hash,
            "labelled_captures": labelled,
        }
    context.run_id = result.snapshot.snapshot_id
    return {
        "skipped": False,
        "snapshot_id": result.snapshot.snapshot_id,
        "new_objects": result.new_objects,
        "content_hash": result.snapshot.content_hash,
        "labelled_captures": labelled,
    }


def _unfinished_snapshot(context: PipelineContext) -> Any:
    """The latest snapshot when no run finished it (no version published, no failed gate), else None."""
    snapshots = DatasetStore(context.store.storage).list_snapshots(context.dataset)
    if not snapshots:
        return None
    latest = snapshots[-1]
    if published_version_of_run(context.store, context.model, latest.snapshot_id) is not None:
        return None
    evaluation = RunArea(context.store.storage, context.model, latest.snapshot_id).result("evaluate")
    if evaluation is not None and not evaluation["gate"]["passed"]:
        return None  # finished: the gate said no
    return latest


def step_preprocess(context: PipelineContext, force: bool = False) -> dict[str, Any]:
    from training.content_hash import content_hash
    from training.spark import build_spark_session, launched_by_spark_submit

    run = context.resolve_run()
    if not force and (done := run.result("preprocess")):
        return done
    snapshot = DatasetStore(context.store.storage).get(context.dataset, run.run_id)
    snapshot_prefix = DatasetStore.snapshot_prefix(context.dataset, snapshot.snapshot_id)
    # The executors read the staged snapshot and write the output: on a remote cluster this must be
    # a folder they share with the driver (FLYWHEEL_SPARK_STAGING_DIR); a local temp folder is
    # enough for local[*] and the local standalone cluster.
    with _scratch(context.settings.spark_staging_dir) as scratch:
        raw_dir, output_dir = Path(scratch) / "raw", Path(scratch) / "out"
        context.progress(f"staging {len(snapshot.objects)} objects of {snapshot.snapshot_id}")
        for item in snapshot.objects:
            context.store.storage.get_file(snapshot_prefix + item.stored_as, raw_dir / item.stored_as)
        context.progress(f"Spark preprocessing on {context.settings.resolved_spark_master}")
        spark = build_spark_session(
            master=context.settings.resolved_spark_master,
            app_name=f"flywheel-preprocess-{context.model}",
            driver_memory=context.settings.spark_driver_memory,
            log_file=context.settings.log_dir / "spark.log",
        )
        report = context.task.preprocess(spark, raw_dir, output_dir)
        # Equal for equal data whichever master ran it (local[*], the standalone cluster, ...).
        report["content_hash"] = content_hash(output_dir)
        report["spark"] = {"master": spark.sparkContext.master, "spark_submit": launched_by_spark_submit()}
        return run.upload("preprocess", output_dir, {"snapshot_id": snapshot.snapshot_id, **report})


def step_train(
    context: PipelineContext, framework: str, force: bool = False, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train one framework's model with the task's defaults, the run's searched parameters over
    them (the tune step), and ``params`` over both."""
    from training.exports import export_savedmodel, export_torchscript, torch_predict
    from training.tune import tuned_overrides

    task = context.task
    run = context.resolve_run()
    tuned = tuned_overrides(run, task, framework)
    chosen = task.params(framework, {**tuned, **(params or {})})
    step = f"train-{framework}"
    # A stored result stands only if it took the search's current choice: `pipeline tune` run again
    # after training must retrain, or the lineage would name parameters the model was not trained with.
    if not force and (done := run.result(step)) and done.get("tuned", {}) == tuned:
        return done
    with _scratch() as scratch:
        preprocess_dir = run.download("preprocess", Path(scratch) / "preprocess")
        splits = task.load_splits(preprocess_dir)
        output = Path(scratch) / "out"
        context.progress(f"training {framework} on {len(splits['train'])} {task.name} examples")
        signature = task.signature()
        if framework == "pytorch":
            model = task.train_torch(splits, preprocess_dir, chosen)
            export_torchscript(model, signature, output / "model.pt")
            test_prediction = torch_predict(model, splits["test"].features)
            validation_prediction = torch_predict(model, splits["validation"].features)
            (output / "prediction_profile.json").write_text(
                json.dumps(task.prediction_profile(validation_prediction, splits["validation"].target))
            )
        else:
            keras_model = task.train_keras(splits, preprocess_dir, chosen)
            export_savedmodel(keras_model, signature, output / "savedmodel")
            keras_model.save(output / "model.keras")  # the in-process form, for parity checks
            test_prediction = keras_model.predict(splits["test"].features, verbose=0)
        report = task.evaluate(splits["test"].target, test_prediction)
        result = {"framework": framework, "metrics": report, "params": chosen, "tuned": tuned}
        return run.upload(step, output, result)


def _score_frameworks(
    task: Task, torchscript: Path, savedmodel: Path, features: np.ndarray, target: np.ndarray
) -> dict[str, Any]:
    """Holdout metrics per framework whose export exists (an imported champion may have one)."""
    import torch

    from training.exports import load_serving_signature, predict_savedmodel, torch_predict

    reports = {}
    if torchscript.exists():
        scripted = torch.jit.load(str(torchscript)).eval()
        reports["pytorch"] = task.evaluate(target, torch_predict(scripted, features))
    if (savedmodel / "saved_model.pb").exists():
        served = load_serving_signature(savedmodel)
        reports["tensorflow"] = task.evaluate(target, predict_savedmodel(served, task.signature(), features))
    return reports


def step_evaluate(context: PipelineContext, force: bool = False) -> dict[str, Any]:
    run = context.resolve_run()
    if not force and (done := run.result("evaluate")):
        return done
    settings, task = context.settings, context.task
    metric = settings.gate_metric or task.metric.primary
    policy = GatePolicy(
        metric=metric,
        min_improvement=settings.gate_min_improvement,
        max_regression=settings.gate_max_regression,
        higher_is_better=(
            task.metric.higher_is_better
            if metric == task.metric.primary
            else task.metric.guards.get(metric, False)
        ),
        guards={name: higher for name, higher in task.metric.guards.items() if name != metric},
    )
    with _scratch() as scratch_name:
        scratch = Path(scratch_name)
        test = task.load_splits(run.download("preprocess", scratch / "preprocess"))["test"]
        torch_dir = run.download("train-pytorch", scratch / "pytorch")
        tf_dir = run.download("train-tensorflow", scratch / "tensorflow")
        context.progress("scoring the candidate on the holdout")
        candidate = _score_frameworks(
            task, torch_dir / "model.pt", tf_dir / "savedmodel", test.features, test.target
        )
        champion_version = context.store.aliases(context.model).get("champion")
        champion = None
        if champion_version is not None:
            context.progress(f"scoring champion v{champion_version} on the same holdout")
            champion_dir = scratch / "champion"
            manifest = context.store.fetch(
                context.model, champion_version, champion_dir, prefix="torchscript/"
            )
            context.store.fetch(context.model, champion_version, champion_dir, prefix="savedmodel/")
            # A framework the champion lacks (an imported TorchScript has no SavedModel) is judged
            # against the naive baseline instead.
            champion = _score_frameworks(
                task,
                champion_dir / "torchscript" / "model.pt",
                champion_dir / "savedmodel" / str(manifest.version),
                test.features,
                test.target,
            )
        known = sorted(next(iter(candidate.values())))
        if policy.metric not in known:
            raise LookupError(
                f"the gate metric {policy.metric!r} (FLYWHEEL_GATE_METRIC) is not one of task "
                f"{task.name}'s metrics: {', '.join(known)}"
            )
        result = gate(candidate, champion, champion_version, policy)
        output = scratch / "out"
        output.mkdir()
        (output / "evaluation.json").write_text(result.model_dump_json(indent=2))
        return run.upload(
            "evaluate",
            output,
            {"gate": result.model_dump(mode="json"), "candidate": candidate, "champion": champion},
        )


def step_package(context: PipelineContext, force: bool = False) -> dict[str, Any]:
    from training.package import package_model

    run = context.resolve_run()
    if not force and (done := run.result("package")):
        return done
    with _scratch() as scratch_name:
        scratch = Path(scratch_name)
        preprocess_dir = run.download("preprocess", scratch / "preprocess")
        torch_dir = run.download("train-pytorch", scratch / "pytorch")
        tf_dir = run.download("train-tensorflow", scratch / "tensorflow")
        context.progress("building the .mar, the Triton entry and the SavedModel")
        output = package_model(
            context.model, context.task.signature(), torch_dir, tf_dir, preprocess_dir, scratch / "package"
        )
        files = sorted(path.relative_to(output).as_posix() for path in output.rglob("*") if path.is_file())
        return run.upload("package", output, {"files": files})


def published_version_of_run(store: ModelStore, model: str, run_id: str) -> int | None:
    for version in reversed(store.list_versions(model)):
        if store.get_manifest(model, version).lineage.run_id == run_id:
            return version
    return None


def step_publish(context: PipelineContext, allow_failed_gate: bool = False) -> dict[str, Any]:
    """Publish the packaged artifacts once per run; bootstrap the champion alias for a first model."""
    run = context.resolve_run()
    existing = published_version_of_run(context.store, context.model, run.run_id)
    if existing is not None:
        return {"version": existing, "already_published": True}
    evaluation = run.result("evaluate")
    if evaluation is None:
        raise GateFailedError("the candidate has not been evaluated; run `flywheel pipeline evaluate` first")
    gate_result = GateResult.model_validate(evaluation["gate"])
    if not gate_result.passed and not allow_failed_gate:
        raise GateFailedError("the evaluation gate failed: " + "; ".join(gate_result.reasons))
    replayed = run.result("replay")
    if replayed is not None and not replayed.get("passed", True) and not allow_failed_gate:
        raise GateFailedError("the replay before the canary failed: " + "; ".join(replayed["reasons"]))
    gate_result.replay = replayed
    snapshot = DatasetStore(context.store.storage).get(context.dataset, run.run_id)
    train_results = {framework: run.result(f"train-{framework}") or {} for framework in FRAMEWORKS}
    git_sha, git_dirty = git_state()
    from training.labelled_captures import record_for_key
    from training.tune import tuning_lineage

    from_traffic = [
        r for item in snapshot.objects if (r := record_for_key(context.store, context.model, item.key))
    ]
    lineage = Lineage(
        run_id=run.run_id,
        dataset_snapshot=snapshot.snapshot_id,
        dataset_hash=snapshot.content_hash,
        source_objects=[f"s3://{item.bucket}/{item.key}#{item.etag}" for item in snapshot.objects],
        capture_batches=sorted({key for record in from_traffic for key in record["capture_batches"]}),
        label_files=sorted({key for record in from_traffic for key in record["label_files"]}),
        git_sha=git_sha,
        git_dirty=git_dirty,
        params={framework: result.get("params", {}) for framework, result in train_results.items()},
        tuning=tuning_lineage(run.result("tune")),
        packages=package_versions(),
    )
    metrics = {
        f"{framework}_{name}": value
        for framework, report in evaluation["candidate"].items()
        for name, value in report.items()
    }
    with _scratch() as scratch_name:
        package_dir = run.download("package", Path(scratch_name) / "package")
        context.progress("publishing artifacts, manifest last")
        manifest = context.store.publish(
            context.model,
            artifacts_from_directory(package_dir),
            framework="pytorch+tensorflow",
            task=context.task.name,
            output=context.task.output,
            backends=packaged_backends(),
            signature=context.task.signature(),
            lineage=lineage,
            metrics=metrics,
            gate=gate_result,
        )
    if "champion" not in context.store.aliases(context.model):
        context.store.set_alias(
            context.model, "champion", manifest.version, expected=None, actor="pipeline", reason="first model"
        )
    return {"version": manifest.version, "already_published": False, "gate_passed": gate_result.passed}


def run_all(context: PipelineContext, force: bool = False) -> dict[str, Any]:
    """Every step in order; stops after ingest when nothing is new, and before publish on a failed
    gate or replay."""
    from training.replay import step_replay
    from training.tune import step_tune

    results: dict[str, Any] = {"ingest": step_ingest(context)}
    if results["ingest"]["skipped"] and context.run_id is None:
        return results
    results["preprocess"] = step_preprocess(context, force)
    results["tune"] = step_tune(context, force)
    for framework in FRAMEWORKS:
        results[f"train-{framework}"] = step_train(context, framework, force)
    results["evaluate"] = step_evaluate(context, force)
    if not results["evaluate"]["gate"]["passed"]:
        results["publish"] = {"skipped": True, "reason": "; ".join(results["evaluate"]["gate"]["reasons"])}
        return results
    results["package"] = step_package(context, force)
    results["replay"] = step_replay(context, force)
    if not results["replay"]["passed"]:
        results["publish"] = {"skipped": True, "reason": "; ".join(results["replay"]["reasons"])}
        return results
    results["publish"] = step_publish(context)
    return results
