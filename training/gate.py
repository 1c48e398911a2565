"""The evaluation gate: a candidate replaces the champion only on evidence.

For each framework, the candidate and the champion are scored on the *same* holdout (the
candidate's test split). The gate passes when the task's primary metric (in its direction:
``rmse`` lower for the forecaster, ``accuracy`` higher for the classifier) improves by at least
``min_improvement`` (relative) and no guard metric regresses by more than ``max_regression``
(relative). With no champion yet, the reference is the task's baseline on the same holdout (the
``*_naive`` entries of its report), so a first model must beat, say, "tomorrow = today".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model_store.manifest import GateResult


@dataclass(frozen=True)
class GatePolicy:
    metric: str = "rmse"
    min_improvement: float = 0.0
    max_regression: float = 0.05
    higher_is_better: bool = False
    #: Guard metrics and whether higher is better.
    guards: dict[str, bool] = field(default_factory=dict)


def relative_change(candidate: float, reference: float, higher_is_better: bool) -> float:
    """Positive when the candidate is better, as a fraction of the reference."""
    if reference == 0:
        return 0.0
    change = (candidate - reference) / abs(reference)
    return change if higher_is_better else -change


def judge(
    framework: str,
    candidate: dict[str, float],
    reference: dict[str, float],
    policy: GatePolicy,
    reference_name: str,
) -> tuple[bool, list[str]]:
    """One framework's verdict with a reason for each check."""
    reasons = []
    improvement = relative_change(
        candidate[policy.metric], reference[policy.metric], higher_is_better=policy.higher_is_better
    )
    passed = improvement >= policy.min_improvement
    reasons.append(
        f"{framework}: {policy.metric} {candidate[policy.metric]:.6f} vs {reference_name} "
        f"{reference[policy.metric]:.6f} ({improvement:+.2%}; needs >= {policy.min_improvement:+.2%})"
        + ("" if passed else " -> FAIL")
    )
    for metric, higher_is_better in policy.guards.items():
        if metric not in reference:
            continue
        change = relative_change(candidate[metric], reference[metric], higher_is_better)
        ok = change >= -policy.max_regression
        passed = passed and ok
        reasons.append(
            f"{framework}: {metric} {candidate[metric]:.4f} vs {reference[metric]:.4f} ({change:+.2%}; "
            f"may regress at most {policy.max_regression:.0%})" + ("" if ok else " -> FAIL")
        )
    return passed, reasons


def naive_reference(report: dict[str, float]) -> dict[str, float]:
    """The ``*_naive`` entries of a holdout report, under the plain metric names."""
    return {key.removesuffix("_naive"): value for key, value in report.items() if key.endswith("_naive")}


def gate(
    candidate: dict[str, dict[str, float]],
    champion: dict[str, dict[str, float]] | None,
    champion_version: int | None,
    policy: GatePolicy,
) -> GateResult:
    """Combine per-framework verdicts: every framework must pass."""
    verdicts, reasons = [], []
    for framework, report in sorted(candidate.items()):
        if champion is not None and framework in champion:
            reference, name = champion[framework], f"champion v{champion_version}"
        else:
            reference, name = naive_reference(report), "naive baseline"
        passed, framework_reasons = judge(framework, report, reference, policy, name)
        verdicts.append(passed)
        reasons += framework_reasons
    primary = candidate.get("pytorch") or next(iter(candidate.values()))
    primary_reference = (champion or {}).get("pytorch") if champion else naive_reference(primary)
    return GateResult(
        passed=all(verdicts),
        metric=policy.metric,
        champion_version=champion_version,
        candidate_value=primary[policy.metric],
        champion_value=(primary_reference or {}).get(policy.metric),
        reasons=reasons,
    )
