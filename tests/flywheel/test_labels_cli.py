"""`flywheel labels import | derive | join | quality`: labels stored, joined to captures, measured."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from flywheel.cli.main import app
from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from model_store.backends.s3 import s3_client
from model_store.manifest import OutputKind, OutputSpec
from serving.gateway.capture import CaptureWriter
from tasks.stock_forecast.labels import next_day_returns
from tasks.stock_forecast.synthetic import generate
from tests.conftest import new_bucket


def run_json(runner: CliRunner, *args: str, code: int = 0) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return dict(json.loads(result.stdout))


def serve(
    store: ModelStore, model: str, requests: list[tuple[str, list[float], str | None]], kind: bool
) -> None:
    writer = CaptureWriter(store.storage, CollectorRegistry(), "gateway", 1.0)
    for request_id, row, entity in requests:
        headers = {"x-flywheel-entity": entity} if entity else {}
        writer.offer(model, 1, "triton-v1", "triton", request_id, {"x": np.zeros((1, 2), np.float32)},
                     {"y": np.array([row], np.float32)}, 0.01, kind, headers)  # fmt: skip
    asyncio.run(writer.flush())


@pytest.fixture
def classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, ModelStore]:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", f"file://{tmp_path / 'store'}")
    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    (tmp_path / "model.pt").write_bytes(b"weights")
    store.register("c", "fashion_mnist")
    output = OutputSpec(kind=OutputKind.CLASSIFICATION, class_names=["a", "b", "c"])
    store.publish("c", {"model.pt": tmp_path / "model.pt"}, framework="pytorch", output=output,
                  metrics={"accuracy": 0.8, "log_loss": 0.5})  # fmt: skip
    serve(store, "c", [(f"r{n}", [0.1, 0.7, 0.2], None) for n in range(10)], kind=True)
    return CliRunner(), store


def test_imported_labels_join_and_give_live_quality_beside_the_holdout(
    classifier: tuple[CliRunner, ModelStore], tmp_path: Path
) -> None:
    runner, _ = classifier
    # Eight of ten requests predicted class 1 rightly; one label names a request never captured.
    rows = [f"r{n},{1 if n < 8 else 2}" for n in range(10)] + ["r-unknown,0"]
    (tmp_path / "labels.csv").write_text("request_id,label\n" + "\n".join(rows) + "\n")
    stored = run_json(runner, "labels", "import", "c", str(tmp_path / "labels.csv"), "--source", "reviewers")
    assert stored["labels"] == 11 and stored["key"].startswith("labels/c/") and "reviewers-" in stored["key"]
    joined = run_json(runner, "labels", "join", "c")
    assert (joined["captured"], joined["labels"], joined["joined"], joined["pending"]) == (10, 11, 10, 1)
    [version] = run_json(runner, "labels", "quality", "c")["versions"]
    assert version["version"] == 1 and version["labels"] == 10
    assert version["live"]["accuracy"] == pytest.approx(0.8) and version["holdout"] == {"accuracy": 0.8}
    people = runner.invoke(app, ["labels", "quality", "c"])
    assert people.exit_code == 0 and "accuracy" in people.stdout and "0.8000" in people.stdout


def test_the_queue_lists_unsure_unlabelled_requests_newest_first_and_writes_a_csv(
    classifier: tuple[CliRunner, ModelStore], tmp_path: Path
) -> None:
    runner, store = classifier
    serve(store, "c", [("sure", [0.01, 0.98, 0.01], None), ("unsure-1", [0.4, 0.35, 0.25], None),
                       ("unsure-2", [0.3, 0.3, 0.4], "img-9")], kind=True)  # fmt: skip
    # The fixture's ten requests answered 0.7; two of them are labelled already.
    (tmp_path / "done.csv").write_text("request_id,label\nr0,1\nr1,1\n")
    run_json(runner, "labels", "import", "c", str(tmp_path / "done.csv"))
    queued = run_json(
        runner, "labels", "queue", "c", "--below", "0.75", "--output", str(tmp_path / "queue.csv")
    )
    ids = [row["request_id"] for row in queued["requests"]]
    assert set(ids) == {f"r{n}" for n in range(2, 10)} | {"unsure-1", "unsure-2"}, "not sure, not r0, r1"
    assert ids[:2] == ["unsure-2", "unsure-1"], "newest first"
    written = (tmp_path / "queue.csv").read_text().splitlines()
    assert written[0].startswith('"request_id"') and len(written) == 11
    assert len(run_json(runner, "labels", "queue", "c", "--below", "0.75", "--limit", "3")["requests"]) == 3


def test_bad_label_files_are_refused_and_store_nothing(
    classifier: tuple[CliRunner, ModelStore], tmp_path: Path
) -> None:
    runner, store = classifier
    (tmp_path / "no-key.csv").write_text("label\n1\n")
    assert (
        "request_id"
        in run_json(runner, "labels", "import", "c", str(tmp_path / "no-key.csv"), code=1)["error"]
    )
    (tmp_path / "labels.txt").write_text("x")
    assert (
        ".csv, .parquet"
        in run_json(runner, "labels", "import", "c", str(tmp_path / "labels.txt"), code=1)["error"]
    )
    (tmp_path / "class-5.csv").write_text("request_id,label\nr1,5\n")
    error = run_json(runner, "labels", "import", "c", str(tmp_path / "class-5.csv"), code=1)["error"]
    assert "class index from 0 to 2" in error, "c has three classes"
    (tmp_path / "ok.csv").write_text("request_id,label\nr1,1\n")
    assert (
        "invalid model name"
        in run_json(runner, "labels", "import", "../x", str(tmp_path / "ok.csv"), code=1)["error"]
    )
    assert list(store.storage.list_keys("labels/")) == []
    result = runner.invoke(app, ["labels", "derive", "c", "--json"])
    assert result.exit_code == 1 and "import them" in result.stdout, "a classifier's labels come from people"


def test_next_day_returns_are_the_training_target_per_symbol_and_day(tmp_path: Path) -> None:
    frames = generate(["AAA", "BBB"], date(2024, 1, 1), 5, drift=False, seed=1)
    files = {}
    for symbol, frame in frames.items():
        files[f"raw/batch/{symbol}.csv"] = tmp_path / f"{symbol}.csv"
        frame.to_csv(files[f"raw/batch/{symbol}.csv"], index=False)
    truths = next_day_returns(files).set_index("entity")["label"]
    aaa = frames["AAA"]
    first = f"AAA@{aaa['Date'].iloc[0]}"
    assert truths[first] == pytest.approx(aaa["Close"].iloc[1] / aaa["Close"].iloc[0] - 1)
    assert len(truths) == 8, "each symbol's last day has no next day yet"


def test_derive_writes_next_day_returns_for_captured_entities_only_once(
    s3_settings: FlywheelSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(s3_settings)
    assert s3_settings.s3_secret_access_key is not None
    environment = {
        "HOME": tmp_path, "CONFIG": tmp_path / "absent.toml", "RAW_BUCKET": bucket,
        "S3_PORT": s3_settings.s3_port, "STORE_URI": f"file://{tmp_path / 'store'}",
        "S3_SECRET_ACCESS_KEY": s3_settings.s3_secret_access_key.get_secret_value(),
    }  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(f"FLYWHEEL_{name}", str(value))
    store = ModelStore.open(f"file://{tmp_path / 'store'}")
    store.register("f", "stock_forecast")
    frame = generate(["AAA"], date(2024, 1, 1), 6, drift=False, seed=2)["AAA"]
    days = list(frame["Date"].astype(str))
    s3_client(s3_settings).put_object(
        Bucket=bucket, Key="raw/b1/AAA.csv", Body=frame.to_csv(index=False).encode()
    )
    serve(store, "f", [("q1", [0.01], f"AAA@{days[1]}"), ("q2", [-0.02], f"AAA@{days[5]}"),
                       ("q3", [0.0], None)], kind=False)  # fmt: skip
    runner = CliRunner()
    derived = run_json(runner, "labels", "derive", "f")
    assert (derived["raw_objects"], derived["known"], derived["captured_entities"], derived["written"]) == (
        1,
        5,
        2,
        1,
    )
    assert run_json(runner, "labels", "derive", "f")["written"] == 0, "no label twice"
    joined = run_json(runner, "labels", "join", "f")
    assert (joined["joined"], joined["pending"]) == (1, 0), "the last day's truth is not known yet"
