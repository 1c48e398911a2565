"""A ``.mar`` archive for TorchServe, built by the real ``torch-model-archiver``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Flywheel's batch-aware handler, packed into every archive it builds.
TORCHSERVE_HANDLER = Path(__file__).with_name("torchserve_handler.py")


class PackagingError(RuntimeError):
    """A packaging tool failed; the message carries its output."""


def build_mar(name: str, torchscript: Path, signature_file: Path, export_dir: Path) -> Path:
    """Run the real ``torch-model-archiver`` with Flywheel's batch-aware handler."""
    export_dir.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    result = subprocess.run(
        [
            str(archiver),
            "--model-name", name,
            "--version", "1.0",
            "--serialized-file", str(torchscript),
            "--handler", str(TORCHSERVE_HANDLER),
            "--extra-files", str(signature_file),
            "--export-path", str(export_dir),
            "--force",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        raise PackagingError(f"torch-model-archiver failed: {result.stderr.strip() or result.stdout.strip()}")
    return export_dir / f"{name}.mar"
