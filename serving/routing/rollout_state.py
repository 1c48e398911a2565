"""A rollout's durable state, kept inside the routing spec so it moves with every CAS write.

The controller advances ``step`` only by a compare-and-swap write of the whole spec, so a
controller killed at any point resumes from exactly what the store says: a step is never
skipped (the write that applies it is the record of it) nor repeated (a restarted controller
sees the step already applied and its start time).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RolloutStatus = Literal["running", "promoted", "rolled_back", "aborted"]


class RolloutState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["canary", "blue_green"] = "canary"
    stable: str
    candidate: str
    steps: list[float] = Field(description="Candidate traffic percentages, ending at 100.")
    step: int = Field(default=0, ge=0, description="Index of the step now applied.")
    interval_s: float = Field(gt=0, description="Bake time of each step before it may pass.")
    step_started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    #: When the rollout began: joined labels of requests served since then judge it.
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    #: Cumulative gateway counters per variant when the step started: the analysis window's base.
    baseline: dict[str, Any] = Field(default_factory=dict)
    status: RolloutStatus = "running"
    #: blue_green only: warming (green beside blue, no traffic) or baking (green live, blue idle).
    phase: Literal["warming", "baking"] | None = None
    last_verdict: dict[str, Any] | None = None

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[float]) -> list[float]:
        if not steps or steps[-1] != 100 or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must increase and end at 100, got {steps}")
        if steps[0] <= 0:
            raise ValueError("the first step must send the candidate some traffic")
        return steps

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def weight(self) -> float:
        return self.steps[self.step]
