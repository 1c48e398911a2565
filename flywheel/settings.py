"""Flywheel settings: the one place configuration is read.

Values come, highest priority first, from constructor arguments, ``FLYWHEEL_*`` environment
variables, an optional ``flywheel.toml`` (path in ``FLYWHEEL_CONFIG``, default ``./flywheel.toml``)
and the defaults below. Nothing else in the code base reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

#: Where the optional TOML file is looked for when ``FLYWHEEL_CONFIG`` is not set.
DEFAULT_CONFIG_FILE = "flywheel.toml"


class FlywheelSettings(BaseSettings):
    """Settings shared by the CLI, the local stack and the services it starts."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(
        default_factory=Path.cwd,
        description="Project root. Relative paths below (var_dir, file:// store URIs) resolve against it.",
    )
    var_dir: Path = Field(
        default=Path("var"),
        description="Git-ignored folder for logs, pid files, credentials and local state.",
    )
    store_uri: str | None = Field(
        default=None,
        description=(
            "Model store location: s3://BUCKET[/PREFIX] or file://PATH (relative to home). Unset means "
            "s3://<model_bucket>/store on the configured S3 endpoint (the local SeaweedFS by default), "
            "so every node shares one store."
        ),
    )
    model_bucket: str = Field(
        default="flywheel-models",
        description="Bucket of the default model store (store_uri unset), created by `flywheel up`.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address every local service binds to. Loopback by default; change with care.",
    )
    s3_port: int = Field(default=9000, description="S3 API port of the local SeaweedFS (`weed mini`).")
    s3_grpc_port: int = Field(default=19000, description="gRPC port of the local SeaweedFS S3 gateway.")
    seaweedfs_master_port: int = Field(default=9333, description="Local SeaweedFS master HTTP port.")
    seaweedfs_master_grpc_port: int = Field(default=19333, description="Local SeaweedFS master gRPC port.")
    seaweedfs_volume_port: int = Field(default=9340, description="Local SeaweedFS volume server HTTP port.")
    seaweedfs_volume_grpc_port: int = Field(
        default=19340, description="Local SeaweedFS volume server gRPC port."
    )
    seaweedfs_filer_port: int = Field(default=8888, description="Local SeaweedFS filer HTTP port.")
    seaweedfs_filer_grpc_port: int = Field(default=18888, description="Local SeaweedFS filer gRPC port.")
    seaweedfs_admin_port: int = Field(
        default=23646,
        le=65535 - 10000,
        description="Local SeaweedFS admin port. Its gRPC port is this plus 10000: SeaweedFS's "
        "maintenance worker always dials that offset, so it cannot be set apart.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint for boto3. Empty means the local endpoint at host:s3_port.",
    )
    s3_region: str = Field(default="us-east-1", description="S3 region name passed to boto3.")
    s3_access_key_id: SecretStr = Field(
        default=SecretStr("flywheel"), description="S3 access key id of the local endpoint (or of AWS)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        description="S3 secret access key. Unset: the local endpoint's key is generated into "
        "var/credentials on first use; with s3_endpoint_url set, boto3's own chain (environment, "
        "profile, instance role) is used.",
    )
    raw_bucket: str = Field(
        default="flywheel-raw", description="Bucket of the raw-data landing zone, created by `flywheel up`."
    )
    raw_prefix: str = Field(default="raw/", description="Key prefix under raw_bucket where new data lands.")
    model_name: str = Field(
        default="stock-forecaster",
        description="Model the pipeline commands act on when --model is not given.",
    )
    dataset_name: str | None = Field(
        default=None, description="Dataset the pipeline snapshots raw data into; unset means the model name."
    )
    spark_master: str = Field(
        default="local[*]",
        description="Spark master for preprocessing: local[*] (in-process), or an existing cluster's "
        "spark://..., yarn or k8s://... (then leave spark_cluster off).",
    )
    spark_staging_dir: Path | None = Field(
        default=None,
        description="Folder preprocess stages a snapshot into and Spark writes to. Unset: a local temp "
        "folder, which local[*] and the local standalone cluster reach; a remote master's executors "
        "need a folder they share with the driver (NFS, a shared volume).",
    )
    spark_cluster: bool = Field(
        default=False,
        description="`flywheel up` starts a Spark standalone master and one worker on loopback, and "
        "preprocessing runs on that master instead of spark_master.",
    )
    spark_master_port: int = Field(default=7077, description="Local Spark standalone master port.")
    spark_master_ui_port: int = Field(
        default=7080, description="Local Spark master's web UI (its /json/ is the health probe)."
    )
    spark_worker_port: int = Field(default=7078, description="Local Spark worker port.")
    spark_worker_ui_port: int = Field(default=7081, description="Local Spark worker's web UI.")
    spark_worker_cores: int = Field(default=2, ge=1, description="Cores the local Spark worker offers.")
    spark_worker_memory: str = Field(
        default="2g", pattern=r"^[0-9]+[mg]$", description="Memory the local Spark worker offers executors."
    )
    spark_driver_memory: str = Field(
        default="4g", description="spark.driver.memory for the preprocessing job."
    )
    default_task: str = Field(
        default="stock_forecast",  # tasks.registry.DEFAULT_TASK; settings import nothing of tasks/
        description="Task (tasks/registry.py) a model gets at its first pipeline run when no "
        "`flywheel models register` named one.",
    )
    label_confidence: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="Batch scoring of a classifier sends rows whose max-softmax confidence is below this "
        "to the labeling prefix.",
    )
    gate_metric: str | None = Field(
        default=None,
        description="Holdout metric the evaluation gate compares; unset means the task's primary metric "
        "(rmse for the forecaster, accuracy for the classifier), with the task's direction.",
    )
    gate_min_improvement: float = Field(
        default=0.0,
        description="Relative gain in gate_metric over the champion (or naive baseline) needed to pass.",
    )
    gate_max_regression: float = Field(
        default=0.05,
        description="Largest relative regression allowed on the task's guard metrics "
        "(the forecaster's mae and directional_accuracy).",
    )
    triton_http_port: int = Field(default=8000, description="Triton HTTP (KServe v2) port.")
    triton_grpc_port: int = Field(default=8001, description="Triton gRPC port.")
    triton_metrics_port: int = Field(default=8002, description="Triton Prometheus metrics port.")
    torchserve_inference_port: int = Field(default=8080, description="TorchServe inference API port.")
    torchserve_management_port: int = Field(default=8081, description="TorchServe management API port.")
    torchserve_metrics_port: int = Field(default=8082, description="TorchServe metrics port.")
    torchserve_grpc_inference_port: int = Field(default=7070, description="TorchServe gRPC inference port.")
    torchserve_grpc_management_port: int = Field(default=7071, description="TorchServe gRPC management port.")
    tfserving_grpc_port: int = Field(default=8500, description="TF-Serving-protocol runtime gRPC port.")
    tfserving_rest_port: int = Field(default=8501, description="TF-Serving-protocol runtime REST port.")
    serving_device: str = Field(
        default="cpu",
        pattern="^(cpu|gpu)$",
        description="Where servers run models: cpu, or gpu (Triton KIND_GPU, one GPU per TorchServe worker).",
    )
    backend_timeout_s: float = Field(default=10.0, description="Per-request timeout of the backend adapters.")
    triton_replicas: int = Field(default=1, ge=1, le=8, description="Triton replicas `flywheel up` runs.")
    torchserve_replicas: int = Field(
        default=1, ge=1, le=8, description="TorchServe replicas `flywheel up` runs."
    )
    tfserving_replicas: int = Field(
        default=1, ge=1, le=8, description="TF-Serving-protocol runtime replicas `flywheel up` runs."
    )
    backend_replicas: dict[str, int] = Field(
        default_factory=dict,
        description='Replicas of backend kinds registered beyond the built-in three, e.g. {"onnx": 2}.',
    )
    replica_port_stride: int = Field(
        default=100,
        ge=1,
        description="Replica i of a server listens on its configured ports plus i times this stride.",
    )
    agent_port: int = Field(
        default=9300,
        description="Status port of the first model agent; the others take the next ports in stack order.",
    )
    agent_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a model agent reads the routing specs and checks its server.",
    )
    agent_unload_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a version no spec needs stays loaded (an instant rollback) before unloading.",
    )
    deploy_ready_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long a deploy waits for every replica's agent to report the version ready.",
    )
    agent_stale_after_s: float = Field(
        default=15.0,
        gt=0,
        description="A model agent whose report is older than this counts as gone (its replica too).",
    )
    gateway_http_port: int = Field(
        default=9080, description="Gateway REST port (KServe v2, compatibility paths, admin)."
    )
    gateway_grpc_port: int = Field(
        default=9081, description="Gateway gRPC port (KServe v2 GRPCInferenceService)."
    )
    gateway_replicas: int = Field(
        default=1,
        ge=1,
        le=8,
        description=(
            "Gateway replicas `flywheel up` runs. Above 1, HAProxy takes the gateway ports and the "
            "replicas listen on them plus (i + 1) times replica_port_stride."
        ),
    )
    gateway_workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description=(
            "Worker processes of each gateway replica, sharing its ports (SO_REUSEPORT) so that "
            "throughput scales with cores; their metrics are summed on every worker's /metrics."
        ),
    )
    gateway_replica_name: str = Field(
        default="gateway", description="This gateway replica's name (the stack sets it per replica)."
    )
    load_balancer_stats_port: int = Field(
        default=9404, description="HAProxy's Prometheus /metrics and /stats page (with gateway replicas)."
    )
    gateway_max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="Largest request body (and gRPC message) the gateway accepts; larger ones get 413.",
    )
    gateway_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest the gateway waits for a request body to arrive; a slower one gets 408 "
        "and its connection is closed (a client announcing more bytes than it sends holds nothing).",
    )
    gateway_keepalive_timeout_s: float = Field(
        default=15.0, gt=0, description="Idle keep-alive connections to the gateway close after this."
    )
    routing_reload_interval_s: float = Field(
        default=1.0, gt=0, description="How often gateways look for changed routing specs in the store."
    )
    drift_sample_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of requests whose inputs and predictions the gateway counts into profile bins.",
    )
    feedback_memory: int = Field(
        default=100_000, gt=0, description="Recent request ids a gateway remembers for the feedback endpoint."
    )
    capture_sample_rate: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Share of served requests each gateway captures (inputs and outputs) to capture/ in "
        "the store; the x-flywheel-capture header forces (on) or refuses (off) it per request.",
    )
    capture_flush_interval_s: float = Field(
        default=10.0, gt=0, description="How often a gateway writes its captured requests as a Parquet batch."
    )
    capture_batch_records: int = Field(
        default=2000, gt=0, description="Captured requests that make a gateway flush before the interval."
    )
    capture_max_buffered_mib: float = Field(
        default=64.0,
        gt=0,
        description="Memory a gateway's capture buffer may hold; requests beyond it are dropped and counted.",
    )
    rollout_tick_s: float = Field(
        default=1.0, gt=0, description="How often the rollout controller re-analyses running rollouts."
    )
    rollout_lease_ttl_s: float = Field(
        default=15.0,
        gt=0,
        description="How long a rollout controller's lease on a model lasts unless renewed.",
    )
    rollout_prometheus_url: str | None = Field(
        default=None,
        description=(
            "Prometheus the rollout controller queries (several gateway replicas); "
            "unset: the gateway's /metrics."
        ),
    )
    drift_exporter_port: int = Field(default=9095, description="Port of the drift exporter's /metrics.")
    drift_window_s: float = Field(
        default=300.0, gt=0, description="Length of the drift exporter's sliding window over live traffic."
    )
    drift_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the drift exporter reads the gateway's bins and judges them.",
    )
    quality_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="How often the drift exporter joins labels to captured requests and updates quality.",
    )
    quality_window_labels: int = Field(
        default=500, gt=0, description="Live quality is measured over each version's newest this many labels."
    )
    quality_min_labels: int = Field(
        default=50, gt=0, description="Joined labels a version needs before its live quality is published."
    )
    replay_requests: int = Field(
        default=1000,
        ge=0,
        description="Captured champion requests a retraining run replays through the candidate's own "
        "server before deploying it; 0 turns the replay off.",
    )
    replay_min_requests: int = Field(
        default=100, gt=0, description="Fewer captured champion requests than this: the replay is skipped."
    )
    hpo_trials: int | None = Field(
        default=None,
        ge=0,
        description="Hyperparameter-search trials per retraining run (the tune step); unset: the "
        "task's search_budget; 0 turns the search off (the trainers take the task's defaults).",
    )
    hpo_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Wall-clock budget of the search in seconds: no trial starts after it; unset: "
        "the task's search_budget.",
    )
    hpo_seed: int = Field(
        default=7, description="Seed of the search's TPE sampler: the same seed picks the same trials."
    )
    labelled_captures_min_rows: int = Field(
        default=50,
        ge=0,
        description="Labelled captured requests a retraining run needs before it trains on them "
        "(written as raw data ahead of ingest); 0 turns learning from served traffic off.",
    )
    label_join_window_days: int = Field(
        default=7, gt=0, description="Days of captures and labels each label join reads."
    )
    drift_alert_for: str = Field(
        default="2m",
        pattern=r"^[0-9]+(ms|s|m|h)$",
        description=(
            "How long FeatureDrift/PredictionDrift/ModelQualityDegraded must hold before they fire "
            "(Prometheus `for`)."
        ),
    )
    prometheus_port: int = Field(default=9090, description="Prometheus port.")
    alertmanager_port: int = Field(default=9093, description="Alertmanager port.")
    scrape_interval_s: float = Field(
        default=5.0, gt=0, description="Prometheus scrape and rule-evaluation interval."
    )
    airflow_port: int = Field(default=8090, description="Airflow api-server port (REST API and UI).")
    airflow_url: str | None = Field(
        default=None, description="Airflow api-server the retrain bridge calls. Empty means the local one."
    )
    airflow_username: str = Field(default="flywheel", description="Airflow user (simple auth manager).")
    airflow_password: SecretStr | None = Field(
        default=None,
        description="Airflow password. Generated into var/credentials on first `up` if unset.",
    )
    airflow_executor: Literal["local", "celery"] = Field(
        default="local",
        description="local: LocalExecutor on SQLite (the embedded default). celery: CeleryExecutor with "
        "Redis as the broker, PostgreSQL as the metadata DB and airflow_celery_workers workers.",
    )
    airflow_celery_workers: int = Field(default=1, ge=1, description="Celery workers of the celery profile.")
    airflow_celery_concurrency: int = Field(
        default=2, ge=1, description="Task slots of each Celery worker (its worker processes)."
    )
    redis_port: int = Field(default=6380, description="Port of the celery profile's Redis (the broker).")
    postgres_port: int = Field(
        default=5442, description="Port of the celery profile's PostgreSQL (Airflow's metadata DB)."
    )
    postgres_data_dir: Path | None = Field(
        default=None,
        description="PostgreSQL's data folder. Unset: <var_dir>/postgres. When Flywheel runs as root the "
        "server runs as postgres_os_user, which must be able to reach this folder.",
    )
    postgres_os_user: str = Field(
        default="postgres",
        description="OS user PostgreSQL runs as when Flywheel runs as root (PostgreSQL refuses root).",
    )
    dag_runner: Literal["local", "kubernetes", "spark-submit"] = Field(
        default="local",
        description="How the DAGs run their steps: local (BashOperator, flywheel from .venv), kubernetes "
        "(KubernetesPodOperator in dag_image, training on GPU nodes) or spark-submit (preprocess as "
        "SparkSubmitOperator against spark_submit_conn_id, the rest local).",
    )
    dag_image: str = Field(
        default="ghcr.io/flywheel-ml/flywheel:0.1.0",
        description="Platform image the kubernetes DAG runner's pods run (deploy/docker/Dockerfile).",
    )
    dag_gpu_image: str = Field(
        default="ghcr.io/flywheel-ml/flywheel-train-gpu:0.1.0",
        description="Image of the kubernetes runner's training pods: the platform with CUDA torch and "
        "TensorFlow (deploy/docker/train-gpu.Dockerfile).",
    )
    dag_namespace: str = Field(default="flywheel", description="Namespace of the kubernetes runner's pods.")
    spark_submit_conn_id: str = Field(
        default="spark_default", description="Airflow connection (the master) of the spark-submit runner."
    )
    retrain_dag_id: str = Field(default="flywheel_retrain", description="DAG the retrain bridge triggers.")
    retrain_schedule: str = Field(
        default="*/10 * * * *",
        description=(
            "Cron schedule of the retraining DAG, which is also its new-data check (ingest skips the run "
            "when nothing is new). Empty: only alerts and `flywheel retrain` start runs."
        ),
    )
    batch_score_schedule: str = Field(
        default="0 * * * *",
        description="Cron schedule of the batch-scoring DAG, which scores new raw data. Empty: off.",
    )
    retrain_canary_steps: str = Field(
        default="10,50,100",
        pattern=r"^[0-9.]+(,[0-9.]+)*$",
        description="Traffic steps (percent) of the canary a retrained version rolls out through.",
    )
    retrain_canary_interval_s: float = Field(
        default=30.0, gt=0, description="Bake time of each step of a retrained version's canary."
    )
    retrain_canary_analysis: dict[str, float] = Field(
        default_factory=dict,
        description="Analysis thresholds of a retrained version's canary (its params.analysis), over the "
        'defaults, e.g. {"max_p99_ratio": 5}.',
    )
    retrain_alerts: str = Field(
        default="FeatureDrift,PredictionDrift,ModelQualityDegraded",
        description="Comma-separated alert names that trigger retraining; other alerts are only recorded.",
    )
    retrain_retry_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait between the retrain outbox's delivery attempts."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin API. Generated into var/credentials on first `up` if unset.",
    )
    start_timeout_s: float = Field(
        default=120.0, description="How long `flywheel up` waits for each service to become healthy."
    )
    unhealthy_grace_s: float = Field(
        default=15.0,
        ge=0,
        description="How long `flywheel up` keeps probing a running service that fails its health probe "
        "before it restarts it (one slow answer on a busy machine is not a failure).",
    )
    stop_timeout_s: float = Field(
        default=20.0, description="How long `flywheel down` waits after SIGTERM before SIGKILL."
    )

    @model_validator(mode="after")
    def _one_spark_master(self) -> FlywheelSettings:
        if self.spark_cluster and not self.spark_master.startswith("local"):
            raise ValueError(
                f"spark_cluster starts a local cluster, but spark_master names {self.spark_master!r}: "
                "set one of FLYWHEEL_SPARK_CLUSTER=1 or FLYWHEEL_SPARK_MASTER, not both"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML path itself can only come from the environment: it is read before settings exist.
        toml_path = Path(os.environ.get("FLYWHEEL_CONFIG", DEFAULT_CONFIG_FILE))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    # Derived locations. Kept as properties so that overriding home or var_dir moves all of them.
    @property
    def var_path(self) -> Path:
        return self.var_dir if self.var_dir.is_absolute() else self.home / self.var_dir

    @property
    def run_dir(self) -> Path:
        return self.var_path / "run"

    @property
    def log_dir(self) -> Path:
        return self.var_path / "log"

    @property
    def s3_data_dir(self) -> Path:
        return self.var_path / "seaweedfs"

    @property
    def serving_dir(self) -> Path:
        return self.var_path / "serving"

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint_url or f"http://{self.host}:{self.s3_port}"

    @property
    def resolved_spark_master(self) -> str:
        """The master preprocessing runs on: the local cluster's when one is asked for."""
        if self.spark_cluster:
            return f"spark://{self.host}:{self.spark_master_port}"
        return self.spark_master

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_http_port}"

    @property
    def resolved_airflow_url(self) -> str:
        return self.airflow_url or f"http://{self.host}:{self.airflow_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    def as_env(self) -> dict[str, str]:
        """Every setting as ``FLYWHEEL_*`` variables, so a child process sees exactly these settings.

        Secrets are included (the child needs them): pass the result as a child's environment,
        never log it.
        """
        environment = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict):
                value = json.dumps(value)  # complex fields are read back from the environment as JSON
            environment[f"FLYWHEEL_{name.upper()}"] = str(value)
        return environment

    def replicas_of(self, kind: str) -> int:
        """How many replicas of a server kind the stack runs (1 unless set)."""
        builtin = {"triton": self.triton_replicas, "torchserve": self.torchserve_replicas}
        builtin["tfserving"] = self.tfserving_replicas
        return builtin.get(kind, self.backend_replicas.get(kind, 1))

    def resolve_store_uri(self) -> str:
        """The store URI with a relative ``file://`` path made absolute against ``home``."""
        if self.store_uri is None:
            if self.s3_endpoint_url and "model_bucket" not in self.model_fields_set:
                # On a shared endpoint a default bucket name could be anyone's: name yours.
                raise ValueError(
                    "with FLYWHEEL_S3_ENDPOINT_URL set, name the store: "
                    "FLYWHEEL_STORE_URI=s3://BUCKET/PREFIX (or FLYWHEEL_MODEL_BUCKET)"
                )
            return f"s3://{self.model_bucket}/store"
        if self.store_uri.startswith("file://"):
            path = Path(self.store_uri.removeprefix("file://"))
            if not path.is_absolute():
                path = self.home / path
            return f"file://{path}"
        return self.store_uri
