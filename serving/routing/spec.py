"""The routing spec (``deployments/<name>.json``): which versions serve a model, and how traffic splits.

A spec is revisioned. Every write goes through :class:`serving.routing.spec_store.SpecStore`,
which checks the revision the writer read and appends one entry to the append-only ``history``.
Gateways only read specs; the admin API and the rollout controller write them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model_store.names import validate_name
from serving.routing.rollout_state import RolloutState

StrategyName = Literal["single", "blue_green", "canary", "shadow", "ab", "bandit"]


class SpecError(ValueError):
    """A routing spec that cannot be served: names the field and what is wrong."""


class Variant(BaseModel):
    """One live (version, server) pair. ``weight`` is a share of traffic in percent."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = Field(ge=1)
    backend: str
    weight: float = Field(default=0.0, ge=0.0, le=100.0)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return validate_name(name, kind="variant name")

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, backend: str) -> str:
        from serving.backends.registry import UnknownBackendError, backend_kinds

        if backend not in backend_kinds():
            raise UnknownBackendError(backend)
        return backend

    @staticmethod
    def default_name(backend: str, version: int) -> str:
        return f"{backend}-v{version}"


class StrategyParams(BaseModel):
    """Parameters of every strategy; each strategy reads only its own."""

    model_config = ConfigDict(extra="forbid")

    active: str | None = Field(default=None, description="blue_green: the variant taking all traffic.")
    primary: str | None = Field(default=None, description="shadow: the variant that answers callers.")
    shadow_sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="shadow: share of requests copied to the shadow."
    )
    sticky_header: str = Field(
        default="x-user-id", description="ab: header whose value pins a caller to a variant."
    )
    bandit_prior_alpha: float = Field(default=1.0, gt=0.0, description="bandit: Beta prior successes.")
    bandit_prior_beta: float = Field(default=1.0, gt=0.0, description="bandit: Beta prior failures.")
    canary_steps: list[float] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 100.0],
        description="canary: traffic percentages the rollout controller walks through.",
    )
    analysis: dict[str, float] = Field(
        default_factory=dict, description="canary: analysis thresholds for the rollout controller."
    )


class HistoryEntry(BaseModel):
    """One decision: who or what changed the spec, when, why, and on which evidence."""

    revision: int
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    actor: str
    action: str
    reason: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)


class RoutingSpec(BaseModel):
    """How one model's traffic is served."""

    model_config = ConfigDict(extra="forbid")

    model: str
    revision: int = Field(default=0, ge=0)
    strategy: StrategyName = "single"
    variants: list[Variant]
    params: StrategyParams = Field(default_factory=StrategyParams)
    retry_unavailable: bool = Field(
        default=True,
        description="Retry a request whose server is unreachable on another variant of this spec.",
    )
    rollout: RolloutState | None = Field(
        default=None, description="The progressive rollout driving this spec, if any (last one kept)."
    )
    #: Set in the same write that promotes a version, cleared once the ``champion`` alias names it:
    #: the promotion's durable record, from which the rollout controller finishes a promote that
    #: crashed between the two writes (serving.rollout.promotion).
    pending_champion: int | None = Field(default=None, ge=1)
    history: list[HistoryEntry] = Field(default_factory=list)

    @field_validator("model")
    @classmethod
    def _safe_model(cls, model: str) -> str:
        return validate_name(model)

    @model_validator(mode="after")
    def _consistent(self) -> RoutingSpec:
        if not self.variants:
            raise ValueError("a routing spec needs at least one variant")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise SpecError(f"{self.model}: no variant named {name!r}; variants: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [variant.name for variant in self.variants]

    def versions(self) -> list[int]:
        return sorted({variant.version for variant in self.variants})

    def routable(self) -> list[Variant]:
        """Variants that may answer callers (weight above zero, or the only one)."""
        weighted = [variant for variant in self.variants if variant.weight > 0]
        return weighted or self.variants[:1]
