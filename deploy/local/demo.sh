#!/usr/bin/env bash
# `make demo`: the platform's main job on the embedded default, as far as it exists today.
#   1. bring the local stack up (durable S3 endpoint; more servers join as they are built)
#   2. land seeded synthetic OHLCV data in S3 and run the training pipeline:
#      ingest -> Spark preprocess -> PyTorch + TensorFlow -> gate -> package -> publish (v1, champion)
#   3. land drifted data and run it again: the gate scores the champion on the new holdout,
#      the retrained model beats it, and a new version is published with its lineage
#   4. list the versions, show the new manifest's lineage and gate
#   5. deploy the champion through the gateway (TorchServe), canary the retrained version on
#      TF Serving at 20 %, send traffic over REST, gRPC and TF Serving's REST path, show the
#      split; then roll the retrained version out on Triton automatically (10 -> 50 -> 100 %)
#      under live traffic, watch the controller promote it; show the routing history and metrics
#   6. bring the stack down (KEEP_UP=1 leaves it running)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
export FLYWHEEL_MODEL_NAME=${FLYWHEEL_MODEL_NAME:-stock-forecaster}
step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }

cleanup() { [ "${KEEP_UP:-0}" = 1 ] || flywheel down; }
trap cleanup EXIT

step "flywheel up"
flywheel up

step "flywheel data generate (base regime: momentum)"
flywheel data generate --symbols 5 --days 750 --start 2021-01-04

step "flywheel pipeline run"
flywheel pipeline run

step "flywheel data generate --drift (the regime changes: mean reversion, more volatility)"
flywheel data generate --symbols 5 --days 750 --start 2024-01-01 --drift

step "flywheel pipeline run (retrain; the gate compares with the champion on the new holdout)"
flywheel pipeline run

step "flywheel pipeline run (nothing new: the run is skipped)"
flywheel pipeline run

step "flywheel models list $FLYWHEEL_MODEL_NAME"
flywheel models list "$FLYWHEEL_MODEL_NAME"

step "lineage and gate of the latest version"
flywheel models show "$FLYWHEEL_MODEL_NAME" --json | python -c "$(cat <<'PY'
import json, sys
m = json.load(sys.stdin)
lineage, gate = m["lineage"], m["gate"]
print(f"version {m['version']}: snapshot {lineage['dataset_snapshot']}, git {str(lineage['git_sha'])[:10]}")
print("sources:", *lineage["source_objects"][:2], "...")
print("artifacts:", ", ".join(a["path"] for a in m["artifacts"] if "variables" not in a["path"]))
print("gate:", "passed" if gate["passed"] else "failed", f"against champion v{gate['champion_version']}")
PY
)"

version_of() { flywheel models show "$FLYWHEEL_MODEL_NAME:$1" --json | python -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }
champion=$(version_of champion)
latest=$(version_of latest)

step "flywheel deploy: the champion (v$champion) takes all traffic, served by TorchServe"
flywheel deploy "$FLYWHEEL_MODEL_NAME" --version "$champion" --backend torchserve --strategy single \
  --reason "champion from the first training run"

if [ "$latest" != "$champion" ]; then
  step "flywheel deploy: canary of the retrained v$latest on TF Serving, 20 % of traffic"
  flywheel deploy "$FLYWHEEL_MODEL_NAME" --version "$latest" --backend tfserving --strategy canary --weight 20 \
    --reason "retrained after drift; gate passed"

  step "flywheel predict x300 through the gateway (REST): the split"
  flywheel predict "$FLYWHEEL_MODEL_NAME" --rows 2 --repeat 300

  step "the same gateway over gRPC (KServe v2), pinned to v$latest; and TF Serving's REST path with curl"
  flywheel predict "$FLYWHEEL_MODEL_NAME" --version "$latest" --protocol grpc
  curl -sS -X POST "http://127.0.0.1:${FLYWHEEL_GATEWAY_HTTP_PORT:-9080}/v1/models/$FLYWHEEL_MODEL_NAME/versions/$latest:predict" \
    -H 'Content-Type: application/json' \
    -d "{\"instances\": [$(python -c 'print([[0.001] * 8] * 10)')]}"
  echo

  step "automatic rollout: v$latest on Triton, 10 -> 50 -> 100 %, 5 s per step, under live traffic"
  flywheel predict "$FLYWHEEL_MODEL_NAME" --repeat 100000 --json > /dev/null 2>&1 &
  traffic=$!
  flywheel deploy "$FLYWHEEL_MODEL_NAME" --version "$latest" --backend triton --strategy canary \
    --steps 10,50,100 --interval 5s --reason "retrained after drift; gate passed"
  for _ in $(seq 1 60); do
    state=$(flywheel rollout status "$FLYWHEEL_MODEL_NAME" --json | python -c 'import json,sys; print(json.load(sys.stdin)["rollout"]["status"])')
    [ "$state" != running ] && break
    sleep 2
  done
  kill "$traffic" 2>/dev/null || true
  wait "$traffic" 2>/dev/null || true
  flywheel rollout status "$FLYWHEEL_MODEL_NAME"
  flywheel predict "$FLYWHEEL_MODEL_NAME" --repeat 50
else
  step "no new version to canary (the last run did not publish one)"
fi

step "flywheel routing: the spec and its history (who, when, why)"
flywheel routing "$FLYWHEEL_MODEL_NAME"

step "gateway metrics (Prometheus text, excerpt)"
curl -sS "http://127.0.0.1:${FLYWHEEL_GATEWAY_HTTP_PORT:-9080}/metrics" | grep -E '^flywheel_gateway_requests_total' | head -5

step "flywheel status"
flywheel status
