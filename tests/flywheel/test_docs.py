"""The docs list what the code has: every setting is documented in docs/operations.md."""

from __future__ import annotations

import re

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


def test_gateway_metric_names_match_the_docs() -> None:
    """The metrics table in docs/operations.md lists exactly what the gateway exports."""
    from prometheus_client import CollectorRegistry, generate_latest

    from serving.gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics(CollectorRegistry())
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(flywheel_gateway_[a-z_]+)` \|", operations, re.MULTILINE))
    assert documented == metrics.exported_names()
    exposition = generate_latest(metrics.registry).decode()
    for name in documented:
        assert f"# HELP {name} " in exposition, name
