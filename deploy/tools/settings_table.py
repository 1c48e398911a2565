"""Regenerate the settings table at the end of docs/operations.md from FlywheelSettings.

Usage: .venv/bin/python deploy/tools/settings_table.py   (rewrites the table in place)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from flywheel.settings import FlywheelSettings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
HEADER = "| env variable | default | meaning |"


def table() -> str:
    lines = [HEADER, "|---|---|---|"]
    for name, field in FlywheelSettings.model_fields.items():
        if name == "home":
            default = "(current folder)"
        elif isinstance(field.default, SecretStr):
            default = "(secret)"
        else:
            default = str(field.default)
        lines.append(f"| `FLYWHEEL_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    text = OPERATIONS.read_text()
    start = text.index(HEADER)
    OPERATIONS.write_text(text[:start] + table())


if __name__ == "__main__":
    main()
