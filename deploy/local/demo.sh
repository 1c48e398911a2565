#!/usr/bin/env bash
# `make demo`: the whole loop on the embedded default, on a fresh demo state under var/demo.
#   1. bring the local stack up: S3, Triton, TorchServe, the TF-Serving runtime, the gateway, the
#      rollout controller, the drift exporter, Prometheus, Alertmanager and Airflow
#   2. land seeded synthetic OHLCV data in S3 and trigger the retraining DAG over Airflow's REST
#      API: ingest -> Spark -> PyTorch || TensorFlow -> gate -> package -> publish -> deploy (v1)
#   3. show the version's lineage; predict over REST, gRPC and TF Serving's REST path; replay
#      in-distribution traffic and show the drift table (nothing drifts)
#   4. the loop (deploy/local/demo_loop.py): drifted data lands and live inputs shift; PSI rises,
#      FeatureDrift fires, Alertmanager calls the retrain bridge, Airflow retrains on the new data,
#      the new version rolls out by canary and promotes itself; a timeline is printed
#   5. routing history, batch scoring of the new data with the new champion (labeling set)
#   6. the second task, an image classifier, on the same stack and DAG: trained on Fashion-MNIST,
#      served on Triton, TorchServe and TF Serving; then its data flywheel (deploy/local/
#      demo_classifier.py): a new camera's inverted images are served and captured, live quality
#      drops (CBPE first, then joined labels), low-confidence images go to labelling and labels
#      come back, ModelQualityDegraded retrains it on the labelled captured traffic, the candidate
#      replays the champion's traffic, the canary promotes it; batch scoring sends low-confidence
#      images to labeling
#   7. the dashboard panels rendered to PNG/HTML
#   8. bring the stack down (KEEP_UP=1 leaves it running; the state stays in var/demo)
# REPLICAS=2 (make demo REPLICAS=2) runs two replicas of every model server, each with its model
# agent, and two gateways behind HAProxy; the demo then shows how requests spread over them.
# ENGINES=scale-out (make demo ENGINES=scale-out) runs the production engines: a Spark standalone
# master + worker, Airflow on Celery with Redis and PostgreSQL, and preprocess through spark-submit.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
export FLYWHEEL_VAR_DIR=${FLYWHEEL_VAR_DIR:-var/demo}
export FLYWHEEL_MODEL_NAME=${FLYWHEEL_MODEL_NAME:-stock-forecaster}
# Demo pacing: alerts after 10 s of drift over a 60 s window, a 10 s-per-step canary. The schedule
# is off so that the new data waits for the drift alert (the story told here); by default the
# DAG's schedule also picks new data up on its own.
export FLYWHEEL_RETRAIN_SCHEDULE=${FLYWHEEL_RETRAIN_SCHEDULE-}
export FLYWHEEL_BATCH_SCORE_SCHEDULE=${FLYWHEEL_BATCH_SCORE_SCHEDULE-}
export FLYWHEEL_DRIFT_ALERT_FOR=${FLYWHEEL_DRIFT_ALERT_FOR:-10s}
export FLYWHEEL_DRIFT_WINDOW_S=${FLYWHEEL_DRIFT_WINDOW_S:-60}
export FLYWHEEL_DRIFT_INTERVAL_S=${FLYWHEEL_DRIFT_INTERVAL_S:-2}
export FLYWHEEL_SCRAPE_INTERVAL_S=${FLYWHEEL_SCRAPE_INTERVAL_S:-2}
export FLYWHEEL_DRIFT_SAMPLE_RATE=${FLYWHEEL_DRIFT_SAMPLE_RATE:-0.2}
export FLYWHEEL_RETRAIN_CANARY_STEPS=${FLYWHEEL_RETRAIN_CANARY_STEPS:-10,50,100}
export FLYWHEEL_RETRAIN_CANARY_INTERVAL_S=${FLYWHEEL_RETRAIN_CANARY_INTERVAL_S:-10}
# The data flywheel's pacing: labels joined every 5 s; live quality once 150 labels are joined, so
# ModelQualityDegraded's run finds the 100 labelled captured images it needs to train on.
export FLYWHEEL_QUALITY_INTERVAL_S=${FLYWHEEL_QUALITY_INTERVAL_S:-5}
export FLYWHEEL_QUALITY_MIN_LABELS=${FLYWHEEL_QUALITY_MIN_LABELS:-150}
export FLYWHEEL_LABELLED_CAPTURES_MIN_ROWS=${FLYWHEEL_LABELLED_CAPTURES_MIN_ROWS:-100}
REPLICAS=${REPLICAS:-1}
if [ "$REPLICAS" -gt 1 ]; then
  export FLYWHEEL_GATEWAY_REPLICAS=$REPLICAS FLYWHEEL_TRITON_REPLICAS=$REPLICAS
  export FLYWHEEL_TORCHSERVE_REPLICAS=$REPLICAS FLYWHEEL_TFSERVING_REPLICAS=$REPLICAS
fi
ENGINES=${ENGINES:-embedded}
case "$ENGINES" in
  embedded) ;;
  scale-out)
    export FLYWHEEL_SPARK_CLUSTER=1 FLYWHEEL_AIRFLOW_EXECUTOR=celery FLYWHEEL_DAG_RUNNER=spark-submit ;;
  *) echo "demo: ENGINES must be embedded or scale-out, not $ENGINES" >&2; exit 2 ;;
esac
step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }

cleanup() { [ "${KEEP_UP:-0}" = 1 ] || flywheel down; }
trap cleanup EXIT

step "a fresh demo state in $FLYWHEEL_VAR_DIR (your own var/ is not touched)"
flywheel down > /dev/null
rm -rf "$FLYWHEEL_VAR_DIR"

step "flywheel up"
flywheel up

step "flywheel data generate (base regime: momentum)"
flywheel data generate --symbols 5 --days 750 --start 2021-01-04

step "flywheel retrain --wait: the retraining DAG, triggered over Airflow's REST API"
flywheel retrain "$FLYWHEEL_MODEL_NAME" --reason "first model" --wait

step "lineage and gate of v1"
flywheel models show "$FLYWHEEL_MODEL_NAME" --json | python -c "$(cat <<'PY'
import json, sys
m = json.load(sys.stdin)
lineage, gate = m["lineage"], m["gate"]
print(f"version {m['version']}: snapshot {lineage['dataset_snapshot']}, git {str(lineage['git_sha'])[:10]}")
print("sources:", *lineage["source_objects"][:2], "...")
print("artifacts:", ", ".join(a["path"] for a in m["artifacts"] if "variables" not in a["path"]))
print("gate:", "passed" if gate["passed"] else "failed", "- holdout metrics:",
      ", ".join(f"{k} {v:.4g}" for k, v in sorted(m["metrics"].items()) if k.startswith("pytorch_")))
PY
)"

step "flywheel predict through the gateway: REST, gRPC, and TF Serving's REST path with curl"
flywheel predict "$FLYWHEEL_MODEL_NAME" --rows 2 --repeat 50
flywheel predict "$FLYWHEEL_MODEL_NAME" --version 1 --protocol grpc
curl -sS -X POST "http://127.0.0.1:${FLYWHEEL_GATEWAY_HTTP_PORT:-9080}/v1/models/$FLYWHEEL_MODEL_NAME/versions/1:predict" \
  -H 'Content-Type: application/json' \
  -d "{\"instances\": [$(python -c 'print([[0.001] * 8] * 10)')]}"
echo

step "flywheel traffic: replay v1's training windows (in distribution), then the drift table"
flywheel traffic "$FLYWHEEL_MODEL_NAME" --rows 10000
flywheel drift "$FLYWHEEL_MODEL_NAME"

if [ "$ENGINES" = scale-out ]; then
  step "the engines: Spark applications the standalone master ran, and the Celery workers"
  curl -s "http://127.0.0.1:${FLYWHEEL_SPARK_MASTER_UI_PORT:-7080}/json/" \
    | python -c 'import json, sys; s = json.load(sys.stdin); print(s["url"], [a["name"] for a in s["completedapps"]])' || true
  flywheel status --json | python -c 'import json, sys; print("celery workers:", [s["name"] for s in json.load(sys.stdin)["services"] if "celery" in s["name"] and s["state"] == "running"])' || true
fi

if [ "$REPLICAS" -gt 1 ]; then
  step "the spread: $REPLICAS gateways behind HAProxy, $REPLICAS replicas of each server, one agent beside each"
  flywheel backends replicas
fi

step "the loop: drift -> alert -> retrain -> canary -> promote (watching, not acting)"
python deploy/local/demo_loop.py

step "flywheel routing: the spec and its history (who, when, why)"
flywheel routing "$FLYWHEEL_MODEL_NAME"

step "flywheel batch score: the new data scored by the new champion; low-confidence rows to labeling"
flywheel batch score "$FLYWHEEL_MODEL_NAME"

step "a second task on the same stack: the Fashion-MNIST image classifier (tasks/fashion_mnist)"
flywheel models tasks
flywheel models register image-classifier --task fashion_mnist
flywheel data fashion --batch base --count 8000
# In one process (one Spark session): the drift loop below shows the same steps as the DAG.
flywheel pipeline run --model image-classifier

step "the classifier on each of the three servers: class probabilities through the gateway"
for backend in triton torchserve tfserving; do
  flywheel deploy image-classifier --version 1 --backend "$backend" --strategy single --reason "demo: $backend" > /dev/null
  flywheel predict image-classifier --rows 2 --repeat 5
done

step "the classifier's data flywheel: quality drops -> labelling -> ModelQualityDegraded -> retrain on labelled traffic -> replay -> canary -> promote"
python deploy/local/demo_classifier.py
flywheel labels quality image-classifier

step "flywheel batch score: every image scored by the new champion; below 95 % confidence to labeling"
flywheel batch score image-classifier

step "flywheel dashboards: Grafana files for this stack; the core panels rendered without Grafana"
flywheel dashboards --minutes 15

if [ "$REPLICAS" -gt 1 ]; then
  step "the spread after both loops: requests per server replica, summed over the gateway replicas"
  flywheel backends replicas
fi

step "flywheel status"
flywheel status
