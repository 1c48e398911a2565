"""A publisher in its own process, for the concurrency and crash tests.

    python -m tests.model_store.publisher STORE_URI MODEL FILE [FILE...]

Publishes the files as one version and prints the version number. S3 settings come from the
FLYWHEEL_* environment like every other Flywheel process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flywheel.settings import FlywheelSettings
from model_store import ModelStore


def main() -> None:
    uri, name, *files = sys.argv[1:]
    store = ModelStore.open(uri, FlywheelSettings())
    manifest = store.publish(name, {Path(f).name: Path(f) for f in files}, framework="test")
    print(manifest.version, flush=True)


if __name__ == "__main__":
    main()
