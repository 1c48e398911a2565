"""`flywheel capture ls | show` in-process through typer's runner, against a file store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from flywheel.cli.main import app
from model_store.backends.file import FileStorage
from serving.gateway.capture import CaptureWriter


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", f"file://{tmp_path / 'store'}")
    capture = CaptureWriter(FileStorage(tmp_path / "store"), CollectorRegistry(), "gateway-1", 1.0)
    for number in range(4):
        inputs, outputs = (
            {"x": np.full((1, 3), number, np.float32)},
            {"y": np.array([[0.1, 0.9]], np.float32)},
        )
        headers = {"x-flywheel-entity": f"e{number}"}
        capture.offer("m", 2, "triton-v2", "triton", f"r{number}", inputs, outputs, 0.01, True, headers)
        if number == 1:
            asyncio.run(capture.flush())  # two batches
    asyncio.run(capture.flush())
    return CliRunner()


def run_json(runner: CliRunner, *args: str, code: int = 0) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return dict(json.loads(result.stdout))


def test_ls_lists_batches_and_show_the_newest_requests(runner: CliRunner) -> None:
    listed = run_json(runner, "capture", "ls", "m")
    assert [batch["requests"] for batch in listed["batches"]] == [2, 2]
    assert all("-gateway-1-" in batch["key"] for batch in listed["batches"])
    shown = run_json(runner, "capture", "show", "m", "--limit", "3")
    assert shown["total"] == 4 and [row["request_id"] for row in shown["requests"]] == ["r1", "r2", "r3"]
    assert shown["requests"][0]["entity"] == "e1" and shown["requests"][0]["confidence"] == pytest.approx(0.9)
    people = runner.invoke(app, ["capture", "show", "m"])
    assert people.exit_code == 0 and "r3" in people.stdout and "triton-v2" in people.stdout
    assert run_json(runner, "capture", "ls", "never-served")["batches"] == []
    assert run_json(runner, "capture", "ls", "m", "--since", "2999-01-01")["batches"] == []


def test_bad_names_and_days_are_clear_errors(runner: CliRunner) -> None:
    assert "invalid model name" in run_json(runner, "capture", "show", "../etc", code=1)["error"]
    result = runner.invoke(app, ["capture", "ls", "m", "--since", "yesterday"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
