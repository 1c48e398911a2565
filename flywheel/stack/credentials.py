"""The admin API's bearer token: from settings, or generated once into ``var/credentials``.

The file is written beside its place with mode 0600 and hard-linked into place, which fails if
it already exists: two concurrent first runs cannot end up with different or half-written
tokens. The token is never printed or logged.
"""

from __future__ import annotations

import os
import secrets

from flywheel.settings import FlywheelSettings


def admin_token(settings: FlywheelSettings, create: bool = True) -> str:
    """The configured token, else the generated one (created on first use when ``create``)."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    path = settings.var_path / "credentials" / "admin-token"
    if not path.exists():
        if not create:
            raise FileNotFoundError(
                f"no admin token yet at {path}: run `flywheel up` or set FLYWHEEL_ADMIN_TOKEN"
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f".admin-token.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another first run won; use its token
        finally:
            draft.unlink()
    return path.read_text().strip()
