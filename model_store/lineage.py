"""Lineage facts gathered at publish time: the code's git state and the installed packages."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

#: Packages whose versions decide what a trained artifact is and where it can be loaded.
DEFAULT_TRACKED_PACKAGES = (
    "torch",
    "tensorflow-cpu",
    "pyspark",
    "numpy",
    "pandas",
    "torchserve",
    "torch-model-archiver",
    "nvidia-pytriton",
    "flywheel",
)


def git_state(repository: Path | None = None) -> tuple[str | None, bool | None]:
    """The HEAD commit and whether the work tree has uncommitted changes; (None, None) outside git.

    By default this is the checkout Flywheel's own code runs from: lineage names the code that
    trained a model, wherever the caller's working folder is.
    """
    cwd = repository or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return sha, bool(status.strip())


def package_versions(names: tuple[str, ...] = DEFAULT_TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names``; packages that are not installed are left out."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
