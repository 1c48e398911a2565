"""Run inside .venv-airflow: parse dags/ and print each DAG's tasks and edges as JSON."""

from __future__ import annotations

import json
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
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
        }
        for dag_id, dag in bag.dags.items()
    },
}
print(json.dumps(report))
