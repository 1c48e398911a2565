#!/usr/bin/env bash
# `make demo`: the platform's main job on the embedded default, as far as it exists today.
#   1. bring the local stack up (durable S3 endpoint; more servers join as they are built)
#   2. land seeded synthetic OHLCV data in S3 and run the training pipeline:
#      ingest -> Spark preprocess -> PyTorch + TensorFlow -> gate -> package -> publish (v1, champion)
#   3. land drifted data and run it again: the gate scores the champion on the new holdout,
#      the retrained model beats it, and a new version is published with its lineage
#   4. list the versions, show the new manifest's lineage and gate
#   5. serve both versions side by side on Triton, TorchServe and TF Serving (loaded live from
#      the store, sha256-verified), predict pinned to each, unload the old one
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

step "flywheel backends load: the champion (v1) and the retrained version on all three servers"
flywheel backends load "$FLYWHEEL_MODEL_NAME:champion"
flywheel backends load "$FLYWHEEL_MODEL_NAME:latest"
flywheel backends status "$FLYWHEEL_MODEL_NAME"

step "flywheel backends infer: the same windows, pinned to each version"
flywheel backends infer "$FLYWHEEL_MODEL_NAME:champion"
flywheel backends infer "$FLYWHEEL_MODEL_NAME:latest"

step "flywheel status"
flywheel status
