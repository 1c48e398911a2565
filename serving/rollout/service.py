"""The rollout controller as a local stack service; healthy while its heartbeat file is fresh."""

from __future__ import annotations

import sys
import time

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec


def rollout_service(settings: FlywheelSettings, name: str = "rollout-controller") -> ServiceSpec:
    heartbeat = settings.run_dir / "rollout-controller.heartbeat"
    stale_after_s = max(10.0, 5 * settings.rollout_tick_s)

    def probe() -> str | None:
        try:
            age = time.time() - heartbeat.stat().st_mtime
        except FileNotFoundError:
            return "no heartbeat yet"
        return None if age < stale_after_s else f"last heartbeat {age:.0f} s ago"

    def prepare() -> None:
        heartbeat.unlink(missing_ok=True)  # a fresh start must prove itself

    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-m", "serving.rollout"],
        probe=probe,
        env=settings.as_env(),
        cwd=settings.home,
        prepare=prepare,
    )
