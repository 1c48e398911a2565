"""How a DAG step runs: one ``flywheel ...`` command line, three ways (``FLYWHEEL_DAG_RUNNER``).

- ``local`` (default): a BashOperator runs ``.venv/bin/flywheel`` beside Airflow, with the stack's
  ``FLYWHEEL_*`` settings. Templated arguments travel as environment variables, never spliced into
  the shell line, so a run's params cannot inject shell.
- ``kubernetes``: a KubernetesPodOperator runs the same arguments in the platform image
  (``FLYWHEEL_DAG_IMAGE``, deploy/docker/Dockerfile, with a JRE for Spark) with settings from the
  ``flywheel-settings`` ConfigMap, secrets by reference (deploy/kubernetes) and emptyDir scratch.
  Training steps run the CUDA image (``FLYWHEEL_DAG_GPU_IMAGE``), request one ``nvidia.com/gpu``
  and land on GPU nodes (node selector and toleration).
- ``spark-submit``: the Spark step (preprocess) becomes a SparkSubmitOperator against the
  ``FLYWHEEL_SPARK_SUBMIT_CONN_ID`` connection, running ``training/jobs/pipeline_step.py``, which
  runs the same ``flywheel pipeline`` step on the submitted session; the other steps stay local.

The branch and report tasks call ``flywheel`` in the Airflow worker in every mode: they are short
and read one JSON answer. Listed in ``.airflowignore``: this module defines no DAG.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator

REPO = Path(__file__).resolve().parents[1]  # dags/ sits in the checkout beside .venv
HOME = Path(os.environ.get("FLYWHEEL_HOME") or REPO)  # where the stack's var/ is
FLYWHEEL = str(REPO / ".venv" / "bin" / "flywheel")
RUNNERS = ("local", "kubernetes", "spark-submit")
RUNNER = os.environ.get("FLYWHEEL_DAG_RUNNER", "local")
if RUNNER not in RUNNERS:
    raise ValueError(f"FLYWHEEL_DAG_RUNNER={RUNNER!r}: choose one of {', '.join(RUNNERS)}")
IMAGE = os.environ.get("FLYWHEEL_DAG_IMAGE", "ghcr.io/flywheel-ml/flywheel:0.1.0")
#: Training pods: the platform image with CUDA builds of torch and TensorFlow (train-gpu.Dockerfile).
GPU_IMAGE = os.environ.get("FLYWHEEL_DAG_GPU_IMAGE", "ghcr.io/flywheel-ml/flywheel-train-gpu:0.1.0")
#: Where a pod's writable state goes: the image's root is read-only and it runs as a non-root user.
VAR_DIR = "/var/lib/flywheel"
NAMESPACE = os.environ.get("FLYWHEEL_DAG_NAMESPACE", "flywheel")
SPARK_CONN_ID = os.environ.get("FLYWHEEL_SPARK_SUBMIT_CONN_ID", "spark_default")
PIPELINE_STEP_APP = REPO / "training" / "jobs" / "pipeline_step.py"

#: Pod resources per kind of step: training gets a GPU; the rest are I/O and small CPU work.
STEP_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "default": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "spark": {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
    "gpu": {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    },
}
#: Settings that are secrets: pods read them from Secrets (deploy/kubernetes/README.md).
POD_SECRETS = (
    ("FLYWHEEL_S3_ACCESS_KEY_ID", "flywheel-s3", "access-key-id"),
    ("FLYWHEEL_S3_SECRET_ACCESS_KEY", "flywheel-s3", "secret-access-key"),
    ("FLYWHEEL_ADMIN_TOKEN", "flywheel-admin", "token"),
)


def flywheel_step(
    task_id: str, arguments: list[str], *, gpu: bool = False, spark: bool = False, **kwargs: Any
) -> Any:
    """An operator running ``flywheel *arguments``; arguments may be Jinja templates."""
    if RUNNER == "kubernetes":
        return _pod_step(task_id, arguments, "gpu" if gpu else "spark" if spark else "default", **kwargs)
    if RUNNER == "spark-submit" and spark:
        return _spark_submit_step(task_id, arguments, **kwargs)
    return _bash_step(task_id, arguments, **kwargs)


def _bash_step(task_id: str, arguments: list[str], **kwargs: Any) -> BashOperator:
    environment = {"FLYWHEEL": FLYWHEEL}
    words = ['"$FLYWHEEL"']
    for index, argument in enumerate(arguments):
        if "{{" in argument:  # rendered into the environment, read by the shell as a quoted word
            environment[f"FLYWHEEL_ARG_{index}"] = argument
            words.append(f'"$FLYWHEEL_ARG_{index}"')
        else:
            words.append(shlex.quote(argument))
    return BashOperator(
        task_id=task_id,
        bash_command=" ".join(words),
        env={**environment, **kwargs.pop("env", {})},
        append_env=True,  # the FLYWHEEL_* settings the stack gave Airflow
        cwd=str(HOME),
        **kwargs,
    )


def _pod_step(task_id: str, arguments: list[str], resources: str, **kwargs: Any) -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    gpu = resources == "gpu"
    scratch = [("var", VAR_DIR), ("tmp", "/tmp")]  # staging, Spark's scratch and logs, run folders
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"flywheel-{task_id.replace('_', '-')}",
        namespace=NAMESPACE,
        image=GPU_IMAGE if gpu else IMAGE,
        cmds=["flywheel"],
        arguments=arguments,
        env_vars={"FLYWHEEL_VAR_DIR": VAR_DIR, **kwargs.pop("env", {})},
        volumes=[k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource()) for name, _ in scratch],
        volume_mounts=[k8s.V1VolumeMount(name=name, mount_path=path) for name, path in scratch],
        env_from=[k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name="flywheel-settings"))],
        secrets=[Secret("env", variable, secret, key) for variable, secret, key in POD_SECRETS],
        container_resources=k8s.V1ResourceRequirements(**STEP_RESOURCES[resources]),
        node_selector={"nvidia.com/gpu.present": "true"} if gpu else None,
        tolerations=(
            [k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")] if gpu else None
        ),
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=1000,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        automount_service_account_token=False,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",  # a failed pod stays for `kubectl logs`
        **kwargs,
    )


def _spark_submit_step(task_id: str, arguments: list[str], **kwargs: Any) -> Any:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    venv_bin = REPO / ".venv" / "bin"
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id=SPARK_CONN_ID,
        application=str(PIPELINE_STEP_APP),
        application_args=arguments,
        name=f"flywheel-{task_id}",
        spark_binary="spark-submit",
        # The driver's JVM starts before the job's code runs: its memory is set here, not by the job.
        driver_memory=os.environ.get("FLYWHEEL_SPARK_DRIVER_MEMORY", "4g"),
        env_vars={
            # spark-submit and the driver's Python come from .venv, which has Flywheel and pyspark.
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            # The driver's RPC and block manager bind the stack's address, not the host name's.
            **({"SPARK_LOCAL_IP": os.environ["FLYWHEEL_HOST"]} if os.environ.get("FLYWHEEL_HOST") else {}),
            "PYSPARK_PYTHON": str(venv_bin / "python"),
            "PYSPARK_DRIVER_PYTHON": str(venv_bin / "python"),
            **kwargs.pop("env", {}),
        },
        **kwargs,
    )
