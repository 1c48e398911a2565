"""Run inside .venv-airflow: parse the DAGs folder, then dag.test() the smoke DAG; print the result."""

from __future__ import annotations

import json
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag()
if bag.import_errors:
    print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}))
    sys.exit(2)
dag = bag.get_dag("flywheel_smoke")
run = dag.test()
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print(json.dumps({"run_state": str(run.state), "tasks": states}))
