"""Run inside .venv-airflow: parse dags/ and print each DAG's tasks and edges as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])


def _plain(value: Any) -> Any:
    """Kubernetes client models as plain dicts (their own to_dict), the rest unchanged."""
    if hasattr(value, "to_dict"):
        return {key: item for key, item in value.to_dict().items() if item is not None}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def operator(task: Any) -> dict[str, Any]:
    """What each runner's operator will run: enough to check images, resources and arguments."""
    kind = type(task).__name__
    if kind == "KubernetesPodOperator":
        return {
            "operator": kind,
            "image": task.image,
            "namespace": task.namespace,
            "command": [*task.cmds, *task.arguments],
            "env": (
                dict(task.env_vars)
                if isinstance(task.env_vars, dict)
                else {variable.name: variable.value for variable in task.env_vars or []}
            ),
            "env_from": [_plain(source) for source in task.env_from],
            "secrets": sorted([s.deploy_target, s.secret, s.key] for s in task.secrets),
            "resources": _plain(task.container_resources),
            "node_selector": task.node_selector,
            "tolerations": _plain(task.tolerations),
            "run_as_non_root": _plain(task.security_context).get("run_as_non_root"),
            "mounts": sorted(mount.mount_path for mount in task.volume_mounts),
        }
    if kind == "SparkSubmitOperator":
        return {
            "operator": kind,
            "conn_id": task._conn_id,
            "application": task.application,
            "command": task.application_args,
            "spark_binary": task._spark_binary,
            "env": sorted(task.env_vars or {}),
        }
    if kind == "BashOperator":
        skip = task.skip_on_exit_code
        skip = sorted(skip) if isinstance(skip, (list, set, tuple)) else skip
        return {"operator": kind, "bash_command": task.bash_command, "env": task.env, "skip_on_exit": skip}
    return {"operator": kind}


report = {
    "import_errors": {path: str(error)[-2000:] for path, error in bag.import_errors.items()},
    "dags": {
        dag_id: {
            "tasks": sorted(dag.task_ids),
            "edges": sorted([task.task_id, down] for task in dag.tasks for down in task.downstream_task_ids),
            "params": sorted(dag.params.keys()),
            "max_active_runs": dag.max_active_runs,
            "retries": {task.task_id: task.retries for task in dag.tasks},
            "timeouts": {task.task_id: bool(task.execution_timeout) for task in dag.tasks},
            "has_failure_callback": bool(dag.on_failure_callback),
            "schedule": type(dag.timetable).__name__,
            "operators": {task.task_id: operator(task) for task in dag.tasks},
        }
        for dag_id, dag in bag.dags.items()
    },
}
print(json.dumps(report))
