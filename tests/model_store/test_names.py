from __future__ import annotations

import pytest

from model_store.errors import InvalidNameError
from model_store.names import validate_name, validate_relative_path, validate_version


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a/b",
        "..",
        "a..b",
        "../etc",
        ".hidden",
        "-dash",
        "tab\tname",
        "nl\nname",
        "nul\x00",
        "x" * 129,
        "é",
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid model name"):
        validate_name(name)


@pytest.mark.parametrize("name", ["stock-forecaster", "m1", "a.b_c-d", "X" * 128])
def test_safe_names_pass_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("version", ["0", "-1", "1.5", "01", "abc", "", None])
def test_versions_are_positive_integers(version: object) -> None:
    with pytest.raises(InvalidNameError):
        validate_version(version)  # type: ignore[arg-type]


def test_version_accepts_ints_and_digit_strings() -> None:
    assert validate_version(7) == 7
    assert validate_version("12") == 12


@pytest.mark.parametrize("path", ["/abs", "a/../b", "a\\b", "a//../b", "a/.x"])
def test_artifact_paths_must_stay_inside_the_version(path: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_relative_path(path)


def test_nested_artifact_path_is_normalised() -> None:
    assert validate_relative_path("triton/demo/1/model.py") == "triton/demo/1/model.py"
