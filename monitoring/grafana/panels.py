"""The dashboard's panels as data: one list the Grafana JSON, the PNG render and the tests share.

Every query is PromQL against the stack's Prometheus. Ratios use ``or ... * 0`` on the numerator
so that a variant with no errors shows 0, not a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    thresholds: tuple[float, ...] = ()
    #: Drawn in the PNG render (the "core" panels the demo shows).
    core: bool = True
    kind: str = "timeseries"


@dataclass(frozen=True)
class Annotation:
    name: str
    expr: str
    title: str
    color: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    annotations: tuple[Annotation, ...] = field(default_factory=tuple)


_REQUESTS = "sum by (model, variant) (rate(flywheel_gateway_requests_total[1m]))"
_ERRORS = "sum by (model, variant) (rate(flywheel_gateway_errors_total{variant!=''}[1m]))"


def _quantile(q: float) -> Query:
    return Query(
        f"histogram_quantile({q}, sum by (model, variant, le) "
        "(rate(flywheel_gateway_request_duration_seconds_bucket[1m])))",
        f"p{int(q * 100)} {{{{model}}}}/{{{{variant}}}}",
    )


def build_dashboard() -> Dashboard:
    """The dashboard for the registered server kinds (its health panel lists each kind's job)."""
    from monitoring.prometheus.config import monitored_jobs

    return Dashboard(
        uid="flywheel-loop",
        title="Flywheel: serving, drift and retraining",
        panels=(
            Panel(
                "Traffic share per variant",
                (
                    Query(
                        f"{_REQUESTS} / ignoring(variant) group_left sum by (model) ({_REQUESTS})",
                        "{{model}}/{{variant}}",
                    ),
                ),
                unit="percentunit",
                description=(
                    "Share of each model's requests served by each variant (canary weights in action)."
                ),
            ),
            Panel(
                "Requests per second per variant",
                (Query(_REQUESTS, "{{model}}/{{variant}}"),),
                unit="reqps",
                core=False,
            ),
            Panel(
                "Latency p50 / p99 per variant",
                (_quantile(0.5), _quantile(0.99)),
                unit="s",
                description="Gateway time from routing to the backend's answer.",
            ),
            Panel(
                "Error rate per variant",
                (Query(f"({_ERRORS} or {_REQUESTS} * 0) / {_REQUESTS}", "{{model}}/{{variant}}"),),
                unit="percentunit",
                thresholds=(0.05,),
                description="Failed share of requests; CanaryErrorRate fires above 5 %.",
            ),
            Panel(
                "Feature drift (PSI) per feature",
                (Query("flywheel_feature_psi", "{{model}} v{{version}} {{feature}}"),),
                thresholds=(0.1, 0.2),
                description="Live window against the training profile; 0.1 warn, 0.2 alert (FeatureDrift).",
            ),
            Panel(
                "Prediction drift (PSI) and drifted share",
                (
                    Query("flywheel_prediction_psi", "prediction {{model}} v{{version}}"),
                    Query("flywheel_drift_share", "drifted share {{model}} v{{version}}"),
                ),
                thresholds=(0.2,),
            ),
            Panel(
                "Model accuracy: on joined labels, estimated before them, on the holdout",
                (
                    Query('flywheel_live_quality{metric="accuracy"}', "labelled {{model}} v{{version}}"),
                    Query('flywheel_estimated_quality{metric="accuracy"}', "CBPE {{model}} v{{version}}"),
                    Query('flywheel_holdout_quality{metric="accuracy"}', "holdout {{model}} v{{version}}"),
                ),
                unit="percentunit",
                description=(
                    "Live accuracy over each version's newest joined labels, CBPE's estimate from its "
                    "confidences before any label, and its holdout accuracy; ModelQualityDegraded fires "
                    "0.1 below the holdout."
                ),
            ),
            Panel(
                "Retraining runs",
                (
                    Query(
                        "sum by (model, state) (increase(flywheel_retrain_runs_total[5m]))",
                        "{{model}} {{state}}",
                    ),
                    Query(
                        "sum by (model, outcome) (increase(flywheel_retrain_triggers_total[5m]))",
                        "trigger {{model}} {{outcome}}",
                    ),
                ),
                description="Runs reported by the retraining DAG and triggers sent by the alert bridge.",
            ),
            Panel(
                "Server health",
                (Query(f'up{{job=~"{"|".join(monitored_jobs())}"}}', "{{job}} {{instance}}"),),
                description=(
                    "1 while Prometheus can scrape the service (BackendDown fires after 1 minute at 0)."
                ),
            ),
            Panel(
                "Routing spec revision",
                (Query("flywheel_gateway_routing_spec_revision", "{{model}}"),),
                description="Every deploy, rollout step, promotion and rollback is a new revision.",
                core=False,
            ),
        ),
        annotations=(
            Annotation(
                "Rollout decisions",
                "changes(flywheel_gateway_routing_spec_revision[1m]) > 0",
                "routing change: {{model}}",
                "blue",
            ),
            Annotation(
                "Retraining runs",
                "sum by (model, state) (increase(flywheel_retrain_runs_total[1m])) > 0",
                "retrain {{state}}: {{model}}",
                "purple",
            ),
        ),
    )


FLYWHEEL = build_dashboard()


def all_queries(dashboard: Dashboard = FLYWHEEL) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel query and annotation: what the live-Prometheus test runs."""
    queries = [(f"panel {p.title!r}", q.expr) for p in dashboard.panels for q in p.queries]
    return queries + [(f"annotation {a.name!r}", a.expr) for a in dashboard.annotations]
