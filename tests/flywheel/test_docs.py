"""The docs list what the code has: every setting is documented in docs/operations.md."""

from __future__ import annotations

from flywheel.settings import FlywheelSettings
from tests.support import REPO_ROOT


def test_every_setting_is_documented() -> None:
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    missing = [
        name for name in FlywheelSettings.model_fields if f"`FLYWHEEL_{name.upper()}`" not in operations
    ]
    assert not missing, f"docs/operations.md does not document: {missing}"
    for name, field in FlywheelSettings.model_fields.items():
        assert field.description, f"setting {name} needs a description"
