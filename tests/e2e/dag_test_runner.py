"""Run inside .venv-airflow: dag.test() one DAG from dags/ and print the outcome as JSON.

Usage: dag_test_runner.py DAGS_FOLDER DAG_ID
"""

from __future__ import annotations

import json
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
if bag.import_errors:
    print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}))
    sys.exit(2)
run = bag.get_dag(sys.argv[2]).test(run_conf={"reason": "dag.test"})
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print(json.dumps({"run_state": str(run.state), "tasks": states}))
