"""Generated secrets under ``var/credentials``: the admin API's bearer token, Airflow's credentials and
the local S3 endpoint's secret key.

Each file is written beside its place with mode 0600 and hard-linked into place, which fails if
it already exists: two concurrent first runs cannot end up with different or half-written
secrets. Secrets are never printed or logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flywheel.settings import FlywheelSettings


def generated_secret(settings: FlywheelSettings, name: str, create: bool = True) -> str:
    """The secret in ``var/credentials/<name>``, created on first use when ``create``."""
    path = settings.var_path / "credentials" / name
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no {name} yet at {path}: run `flywheel up` or set it in settings")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another first run won; use its secret
        finally:
            draft.unlink()
    return path.read_text().strip()


def admin_token(settings: FlywheelSettings, create: bool = True) -> str:
    """The configured token, else the generated one (created on first use when ``create``)."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    return generated_secret(settings, "admin-token", create)


def write_private_file(path: Path, text: str) -> Path:
    """``path`` holds ``text``, mode 0600. Written beside it and renamed into place, so a reader (Airflow
    running ``cat`` on it) sees the old or the new content, never a half; unchanged content is not
    rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not path.is_symlink() and path.read_text() == text:
        os.chmod(path, 0o600)
        return path
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(draft, path)
    return path


def admin_token_file(settings: FlywheelSettings) -> str:
    """A file holding the admin token, for clients that read credentials from files (Alertmanager)."""
    token = admin_token(settings)
    generated = settings.var_path / "credentials" / "admin-token"
    if generated.exists() and generated.read_text().strip() == token:
        return str(generated)
    return str(write_private_file(settings.var_path / "credentials" / "admin-token.configured", token))


def airflow_password(settings: FlywheelSettings, create: bool = True) -> str:
    if settings.airflow_password is not None and settings.airflow_password.get_secret_value():
        return settings.airflow_password.get_secret_value()
    return generated_secret(settings, "airflow-password", create)


def s3_credentials(settings: FlywheelSettings) -> tuple[str, str] | None:
    """(access key id, secret key) for S3 clients, or None to let boto3 find them itself.

    A configured secret wins. Without one, the local endpoint (no ``s3_endpoint_url``) uses a
    generated key that ``flywheel up`` also hands to SeaweedFS; an external endpoint (AWS) uses
    boto3's own chain: environment, shared profile, instance or pod role.
    """
    key_id = settings.s3_access_key_id.get_secret_value()
    if settings.s3_secret_access_key is not None and settings.s3_secret_access_key.get_secret_value():
        return key_id, settings.s3_secret_access_key.get_secret_value()
    if settings.s3_endpoint_url:
        return None
    return key_id, generated_secret(settings, "s3-secret-access-key")
