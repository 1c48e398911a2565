"""The task's search space as a Katib ``Experiment``: the same search on a Kubernetes cluster.

``deploy/kubernetes/generate.py`` writes one per task under ``deploy/kubernetes/katib/``. Each
Katib trial is a Job running ``flywheel pipeline tune --trial NAME=VALUE ...`` in the GPU training
image: one training with those parameters on the run's preprocessed data (the latest snapshot, or
``--run-id``), printing ``METRIC=VALUE`` for Katib's StdOut metrics collector. Katib's TPE
(hyperopt) then plays Optuna's part, with the same seed, budget, metric and direction as the
in-run search. Pruning on the validation curve stays with Optuna: Katib's median stop needs a
metric line per epoch, which a trial does not print.
"""

from __future__ import annotations

from typing import Any

from tasks.base import Task
from training.tune import describe_space, katib_value

#: The training image the DAG's kubernetes runner gives train_* and tune (dags/flywheel_runners.py).
TRAIN_GPU_IMAGE = "ghcr.io/flywheel-ml/flywheel-train-gpu:0.1.0"
NAMESPACE = "flywheel"
#: The settings and secrets every Flywheel pod reads (deploy/kubernetes/base).
SETTINGS_CONFIG_MAP = "flywheel-settings"
POD_SECRETS = (
    ("FLYWHEEL_S3_ACCESS_KEY_ID", "flywheel-s3", "access-key-id"),
    ("FLYWHEEL_S3_SECRET_ACCESS_KEY", "flywheel-s3", "secret-access-key"),
)


def experiment_name(task: Task) -> str:
    return f"flywheel-tune-{task.name.replace('_', '-')}"


def _parameter(name: str, described: dict[str, Any]) -> dict[str, Any]:
    if described["kind"] == "choice":
        choices = [katib_value(choice) for choice in described["choices"]]
        return {"name": name, "parameterType": "categorical", "feasibleSpace": {"list": choices}}
    space: dict[str, Any] = {"min": str(described["low"]), "max": str(described["high"])}
    if described["kind"] == "int":
        return {"name": name, "parameterType": "int", "feasibleSpace": space}
    if described["kind"] == "log_float":
        space["distribution"] = "logUniform"
    return {"name": name, "parameterType": "double", "feasibleSpace": space}


def katib_experiment(task: Task, model: str, seed: int = 7) -> dict[str, Any]:
    """The ``kubeflow.org/v1beta1`` Experiment of ``task``'s declared space and budget, tuning
    ``model``'s latest run (a kustomize patch of FLYWHEEL_MODEL_NAME points it at another)."""
    space = describe_space(task.search_space())
    if not space:
        raise ValueError(f"task {task.name} declares no search space")
    names = list(space)
    container = {
        "name": "trial",
        "image": TRAIN_GPU_IMAGE,
        "command": ["flywheel"],
        "args": [
            "pipeline",
            "tune",
            *[argument for name in names for argument in ("--trial", f"{name}=${{trialParameters.{name}}}")],
        ],
        "env": [
            {"name": "FLYWHEEL_MODEL_NAME", "value": model},
            {"name": "FLYWHEEL_VAR_DIR", "value": "/var/lib/flywheel"},
            *[
                {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                for variable, secret, key in POD_SECRETS
            ],
        ],
        "envFrom": [{"configMapRef": {"name": SETTINGS_CONFIG_MAP}}],
        "resources": {
            "requests": {"cpu": "2", "memory": "8Gi"},
            "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/var/lib/flywheel"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {
            "name": experiment_name(task),
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "flywheel-tune",
                "flywheel.dev/task": task.name.replace("_", "-"),
            },
        },
        "spec": {
            "objective": {
                "type": "maximize" if task.metric.higher_is_better else "minimize",
                "objectiveMetricName": task.metric.primary,
            },
            "algorithm": {
                "algorithmName": "tpe",
                "algorithmSettings": [{"name": "random_state", "value": str(seed)}],
            },
            "maxTrialCount": task.search_budget.trials,
            "parallelTrialCount": 1,
            "maxFailedTrialCount": 1,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": [_parameter(name, space[name]) for name in names],
            "trialTemplate": {
                "primaryContainerName": "trial",
                "trialParameters": [
                    {"name": name, "reference": name, "description": f"{task.name} {name}"} for name in names
                ],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "automountServiceAccountToken": False,
                                "securityContext": {
                                    "runAsNonRoot": True,
                                    "runAsUser": 1000,
                                    "seccompProfile": {"type": "RuntimeDefault"},
                                },
                                "containers": [container],
                                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                                "tolerations": [
                                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                                ],
                                "volumes": [
                                    {"name": "scratch", "emptyDir": {}},
                                    {"name": "tmp", "emptyDir": {}},
                                ],
                            }
                        },
                    },
                },
            },
        },
    }
