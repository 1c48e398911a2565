"""Run inside .venv-airflow: dag.test() the retraining DAG from dags/ and print the outcome as JSON."""

from __future__ import annotations

import json
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
if bag.import_errors:
    print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}))
    sys.exit(2)
run = bag.get_dag("flywheel_retrain").test(run_conf={"reason": "dag.test"})
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print(json.dumps({"run_state": str(run.state), "tasks": states}))
