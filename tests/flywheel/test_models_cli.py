"""`flywheel models ...` in-process through typer's runner, against a file store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli.main import app


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("FLYWHEEL_STORE_URI", "file://var/store")  # no S3 endpoint runs here
    return CliRunner()


def run_json(runner: CliRunner, *args: str, code: int = 0) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def make_artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    (folder / "savedmodel" / "{version}").mkdir(parents=True)
    (folder / "savedmodel" / "{version}" / "saved_model.pb").write_bytes(b"pb")
    (folder / "profile.json").write_text("{}")
    return folder


def test_publish_list_show_alias_fetch(runner: CliRunner, tmp_path: Path) -> None:
    folder = make_artifacts(tmp_path)
    for _ in range(2):
        run_json(
            runner,
            "models",
            "publish",
            "forecaster",
            str(folder),
            "--framework",
            "tensorflow",
            "--backend",
            "tfserving",
            "--metric",
            "rmse=0.25",
            "--param",
            "epochs=5",
        )
    models = run_json(runner, "models", "list")["models"]
    assert models == [{"name": "forecaster", "versions": [1, 2], "latest": 2, "aliases": {}}]

    assert run_json(runner, "models", "alias", "forecaster", "champion", "1")["aliases"] == {"champion": 1}
    shown = run_json(runner, "models", "show", "forecaster:champion")
    assert shown["version"] == 1
    assert shown["backends"] == ["tfserving"]
    assert shown["metrics"] == {"rmse": 0.25}
    assert shown["lineage"]["params"] == {"epochs": "5"}
    assert "torch" in shown["lineage"]["packages"]
    assert [a["path"] for a in shown["artifacts"]] == ["profile.json", "savedmodel/1/saved_model.pb"]

    versions = run_json(runner, "models", "list", "forecaster")["versions"]
    assert [(v["version"], v["aliases"]) for v in versions] == [(1, ["champion"]), (2, [])]

    fetched = run_json(runner, "models", "fetch", "forecaster:2", str(tmp_path / "out"))
    assert fetched["version"] == 2
    assert (tmp_path / "out" / "savedmodel" / "2" / "saved_model.pb").read_bytes() == b"pb"


def test_errors_are_clear_and_non_zero(runner: CliRunner, tmp_path: Path) -> None:
    folder = make_artifacts(tmp_path)
    run_json(runner, "models", "publish", "forecaster", str(folder), "--framework", "tf")
    missing = run_json(runner, "models", "show", "forecaster:5", code=1)
    assert missing["error"] == "model 'forecaster' has no version 5; existing versions: 1"
    bad_name = run_json(runner, "models", "publish", "../../etc", str(folder), "--framework", "tf", code=1)
    assert "invalid model name" in bad_name["error"]
    conflict = run_json(runner, "models", "alias", "forecaster", "champion", "1", "--expect", "7", code=1)
    assert "not the expected 7" in conflict["error"]
    unknown_alias = run_json(runner, "models", "show", "forecaster:nope", code=1)
    assert "alias 'nope'" in unknown_alias["error"]


def test_help_teaches(runner: CliRunner) -> None:
    result = runner.invoke(app, ["models", "alias", "--help"])
    assert result.exit_code == 0
    assert "compare-and-swap" in result.stdout.lower()
