"""Import directions inside serving/: routing sits below rollout, the rollout drivers are
siblings over one context, and the gateway never loads models (it has no writable adapter)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO_ROOT

SERVING = REPO_ROOT / "serving"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_routing_never_imports_rollout() -> None:
    for path in (SERVING / "routing").rglob("*.py"):
        leaks = {name for name in imports_of(path) if name.startswith("serving.rollout")}
        assert not leaks, f"{path.relative_to(REPO_ROOT)} imports {leaks}"


def test_rollout_drivers_are_siblings_over_the_context() -> None:
    drivers = ("canary", "blue_green")
    for driver in drivers:
        names = imports_of(SERVING / "rollout" / f"{driver}.py")
        assert "serving.rollout.context" in names
        forbidden = {"serving.rollout.controller", *(f"serving.rollout.{d}" for d in drivers if d != driver)}
        assert not names & forbidden, f"{driver} imports {names & forbidden}"
    assert "serving.rollout.controller" not in imports_of(SERVING / "rollout" / "context.py")


def test_the_gateway_builds_no_writable_adapter() -> None:
    """Only model agents write into a server's folder: the gateway's package names no factory."""
    for path in (SERVING / "gateway").rglob("*.py"):
        names = imports_of(path)
        assert "serving.backends.factory" not in names, f"{path.relative_to(REPO_ROOT)} builds adapters"
