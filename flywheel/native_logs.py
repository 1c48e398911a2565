"""Keep native libraries' start-up chatter off a command's terminal.

TensorFlow logs oneDNN and CPU-feature notices from C++ while it loads, before its own log
level (``TF_CPP_MIN_LOG_LEVEL``) is read from anything but the process's initial environment, so
setting that variable from Python is too late. Loading it with file descriptor 2 pointed away
is what works; Python exceptions are unaffected (they are printed after the descriptor is back).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType


@contextmanager
def native_stderr_to(path: Path | None = None) -> Iterator[None]:
    """For the block, what anything writes to fd 2 goes to ``path`` (appended), or nowhere."""
    sys.stderr.flush()
    saved = os.dup(2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def quiet_import(module: str, log: Path | None = None) -> ModuleType:
    """``importlib.import_module`` with the load-time notices sent to ``log`` (or dropped)."""
    if module in sys.modules:
        return sys.modules[module]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # still lowers what TensorFlow logs later
    with native_stderr_to(log):
        return importlib.import_module(module)
