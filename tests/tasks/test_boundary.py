"""The task seam: what is specific to a task lives in its folder under tasks/, and nowhere else.

serving/, monitoring/ and loadtests/ read the manifest and profile.json; they never import tasks/.
No module outside tasks/ (the CLI's task-specific commands aside, which reach a task's own
helpers through ``tasks.<task>``) names a task's features, columns, classes or input shape.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tasks.base import Task
from tasks.registry import TASKS, get_task

ROOT = Path(__file__).resolve().parents[2]
#: Must not import tasks/ at all: they learn everything from the manifest and the profile.
MANIFEST_READERS = ("serving", "monitoring", "loadtests")
#: Every other product folder: may use the registry, never a task's vocabulary.
PRODUCT = ("training", "model_store", "flywheel", "dags", "deploy", *MANIFEST_READERS)
SOURCE_SUFFIXES = {".py", ".yml", ".yaml", ".json", ".sh", ".pbtxt"}


def sources(folders: tuple[str, ...]) -> list[Path]:
    return sorted(
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts
    )


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def tasks() -> list[Task]:
    return [get_task(name) for name in TASKS]


def forbidden_patterns(task: Task) -> list[re.Pattern[str]]:
    """The task's vocabulary as whole words, its name, and its input shape as written in code."""
    words = [re.compile(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])") for word in task.vocabulary]
    shape = r",\s*".join(str(dimension) for dimension in task.signature().inputs[0].shape[1:])
    # Written in code ([10, 8], (28, 28)) or on a command line (-1,28,28).
    return [*words, re.compile(rf"(?:[\[(]|-1,\s*)(?:-1,\s*)?{shape}(?![0-9])")]


def test_manifest_readers_never_name_a_task() -> None:
    """Not even by name: serving, monitoring and load tests work for a task added tomorrow."""
    names = [re.compile(pattern, re.IGNORECASE) for pattern in (*TASKS, "fashion", "forecaster")]
    found = {
        str(path.relative_to(ROOT)): hits
        for path in sources(MANIFEST_READERS)
        if (hits := sorted({m.group(0) for p in names for m in p.finditer(path.read_text(errors="replace"))}))
    }
    assert found == {}


def test_manifest_readers_never_import_tasks() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            module for module in imported_modules(path) if module.split(".")[0] == "tasks"
        )
        for path in sources(MANIFEST_READERS)
        if path.suffix == ".py"
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


@pytest.mark.parametrize("task", tasks(), ids=lambda task: task.name)
def test_no_task_vocabulary_outside_tasks(task: Task) -> None:
    patterns = forbidden_patterns(task)
    found = {}
    for path in sources(PRODUCT):
        text = path.read_text(errors="replace")
        hits = sorted({match.group(0) for pattern in patterns for match in pattern.finditer(text)})
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert found == {}, "task-specific names outside tasks/ (read them from the manifest or profile instead)"


def test_the_guard_sees_a_leak(tmp_path: Path) -> None:
    """The patterns catch a feature name and the input shape written the usual ways."""
    task = get_task("stock_forecast")
    patterns = forbidden_patterns(task)
    word = sorted(task.vocabulary)[0]
    shape = task.signature().inputs[0].shape
    for leak in (
        f'rows[:, "{word}"]',
        f"x.reshape({shape[1]}, {shape[2]})",
        f"shape=[-1, {shape[1]}, {shape[2]}]",
    ):
        assert any(pattern.search(leak) for pattern in patterns), leak
    assert not any(pattern.search(f"{word}_suffix and prefix_{word}") for pattern in patterns)


def test_every_registered_task_is_complete() -> None:
    for task in tasks():
        assert task.vocabulary, f"{task.name} declares no vocabulary for the boundary test"
        assert set(task.default_params) == {"pytorch", "tensorflow"}
        signature = task.signature()
        assert signature.inputs and signature.outputs and signature.max_batch_size
        if task.output.kind == "classification":
            assert len(task.output.class_names) == signature.outputs[0].shape[-1]
