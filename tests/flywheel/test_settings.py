from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.settings import FlywheelSettings


def test_defaults_bind_loopback_and_store_under_var(tmp_path: Path) -> None:
    settings = FlywheelSettings(home=tmp_path)
    assert settings.host == "127.0.0.1"
    assert settings.resolve_store_uri() == f"file://{tmp_path / 'var' / 'store'}"
    assert settings.s3_url == "http://127.0.0.1:9000"


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "flywheel.toml"
    config.write_text('s3_port = 9100\nraw_bucket = "from-toml"\nstore_uri = "file://elsewhere"\n')
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(config))
    monkeypatch.setenv("FLYWHEEL_S3_PORT", "9200")
    settings = FlywheelSettings(home=tmp_path)
    assert settings.s3_port == 9200
    assert settings.raw_bucket == "from-toml"
    assert settings.resolve_store_uri() == f"file://{tmp_path / 'elsewhere'}"


def test_secrets_are_not_printed(tmp_path: Path) -> None:
    settings = FlywheelSettings(home=tmp_path, admin_token="s3cr3t-token")
    assert "s3cr3t-token" not in repr(settings)
    assert "flywheel-local-secret" not in str(settings.model_dump())
