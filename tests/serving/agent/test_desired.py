"""What a server must hold: live variants, the stable of a running rollout, staged deploys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from serving.agent.desired import needed_versions
from serving.agent.report import AgentReport, VersionState, readiness
from serving.agent.staging import StagedVersion
from serving.routing.rollout_state import RolloutState
from serving.routing.spec import RoutingSpec


def spec(model: str, *variants: tuple[int, str, float], rollout: RolloutState | None = None) -> RoutingSpec:
    return RoutingSpec.model_validate(
        {
            "model": model,
            "strategy": "canary" if len(variants) > 1 else "single",
            "variants": [
                {"name": f"{backend}-v{version}", "version": version, "backend": backend, "weight": weight}
                for version, backend, weight in variants
            ],
            "rollout": rollout,
        }
    )


def test_each_kind_holds_its_own_variants_and_staged_versions() -> None:
    rollout = RolloutState(stable="triton-v1", candidate="tfserving-v2", steps=[10, 100], interval_s=1)
    specs = [
        spec("a", (1, "triton", 90), (2, "tfserving", 10), rollout=rollout),
        spec("b", (4, "triton", 100)),
    ]
    staged = [
        StagedVersion(
            model="b", version=5, backend="triton", expires_at=datetime.now(UTC) + timedelta(minutes=1)
        ),
        StagedVersion(model="b", version=6, backend="torchserve", expires_at=datetime.now(UTC)),
    ]
    assert needed_versions(specs, staged, "triton") == {
        ("a", 1): "live",
        ("b", 4): "live",
        ("b", 5): "staged",
    }
    assert needed_versions(specs, staged, "tfserving") == {("a", 2): "live"}
    assert needed_versions(specs, [], "torchserve") == {}


def test_ready_means_ready_on_every_fresh_replica_and_a_failed_load_says_why() -> None:
    def report(name: str, phase: str, up: bool = True, reason: str = "") -> AgentReport:
        state = VersionState(model="m", version=3, phase=phase, reason=reason)  # type: ignore[arg-type]
        return AgentReport(agent=name, kind="triton", replica=0, endpoints={}, server_up=up, versions=[state])

    assert readiness([report("triton", "ready"), report("triton-1", "ready")], "triton", "m", 3) == (True, [])
    ready, problems = readiness(
        [report("triton", "ready"), report("triton-1", "failed", reason="bad sha256")], "triton", "m", 3
    )
    assert not ready and problems == ["triton-1 could not load m v3: bad sha256"]
    assert readiness([report("triton", "ready", up=False)], "triton", "m", 3)[1] == [
        "triton: its server is not answering"
    ]
    assert readiness([], "triton", "m", 3)[1][0].startswith("no triton replica is reporting")
