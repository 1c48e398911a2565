"""Validation of the names that become storage keys and file paths."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from model_store.errors import InvalidNameError

# One path segment: starts alphanumeric, then letters, digits, '.', '_' or '-'. No '/', no control
# characters, no leading dot; '..' anywhere is refused separately so 'a..b' cannot smuggle traversal.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(name: str, kind: str = "model name") -> str:
    """Return ``name`` if it is a safe single path segment, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid {kind} {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit; '/', '..' and control characters are not allowed"
        )
    return name


def validate_version(version: int | str) -> int:
    """Versions are positive integers, shared by every backend."""
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise InvalidNameError(f"invalid version {version!r}: versions are positive integers") from None
    if number < 1 or str(number) != str(version).strip():
        raise InvalidNameError(f"invalid version {version!r}: versions are positive integers")
    return number


def validate_relative_path(path: str) -> str:
    """An artifact path inside a version folder: relative, POSIX, every segment a safe name."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or "\\" in path:
        raise InvalidNameError(f"invalid artifact path {path!r}: must be a relative POSIX path")
    for part in parts:
        validate_name(part, kind="artifact path segment")
    return "/".join(parts)
