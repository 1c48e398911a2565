from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.settings import FlywheelSettings


def test_defaults_bind_loopback_and_share_the_store_on_s3(tmp_path: Path) -> None:
    settings = FlywheelSettings(home=tmp_path)
    assert settings.host == "127.0.0.1"
    assert settings.resolve_store_uri() == "s3://flywheel-models/store"
    assert settings.s3_url == "http://127.0.0.1:9000"


def test_the_local_s3_key_is_generated_owner_only_and_an_external_endpoint_uses_boto3s_chain(
    tmp_path: Path,
) -> None:
    from flywheel.stack.credentials import s3_credentials

    settings = FlywheelSettings(home=tmp_path)
    key_id, secret = s3_credentials(settings) or ("", "")
    generated = tmp_path / "var" / "credentials" / "s3-secret-access-key"
    assert key_id == "flywheel" and secret == generated.read_text().strip() and len(secret) >= 32
    assert generated.stat().st_mode & 0o777 == 0o600
    assert s3_credentials(FlywheelSettings(home=tmp_path)) == (key_id, secret), "stable across processes"
    assert s3_credentials(settings.model_copy(update={"s3_endpoint_url": "https://s3.amazonaws.com"})) is None


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


def test_an_external_endpoint_needs_a_named_store_bucket(tmp_path: Path) -> None:
    external = FlywheelSettings(home=tmp_path, s3_endpoint_url="https://s3.example.com")
    with pytest.raises(ValueError, match="name the store"):
        external.resolve_store_uri()
    named = external.model_copy(update={"model_bucket": "team-models"})
    named.model_fields_set.add("model_bucket")
    assert named.resolve_store_uri() == "s3://team-models/store"
    assert FlywheelSettings(home=tmp_path, s3_endpoint_url="https://s3.example.com",
                            store_uri="s3://ours/store").resolve_store_uri() == "s3://ours/store"  # fmt: skip


def test_the_cli_says_when_s3_is_unreachable(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support import REPO_ROOT, free_port

    env = {"FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_CONFIG": str(tmp_path / "absent.toml"),
           "FLYWHEEL_S3_PORT": str(free_port()), "PATH": "/usr/bin:/bin"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "flywheel", "models", "list"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot reach S3 at http://127.0.0.1:" in result.stderr and "flywheel up" in result.stderr
    assert "Traceback" not in result.stderr
