#!/usr/bin/env bash
# `make demo`: the platform's main job on the embedded default, as far as it exists today.
#   1. bring the local stack up (durable S3 endpoint; more servers join as they are built)
#   2. publish a model version to the versioned store, with lineage
#   3. list it, point the champion alias at it, show its manifest
#   4. bring the stack down again (KEEP_UP=1 leaves it running)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }

cleanup() { [ "${KEEP_UP:-0}" = 1 ] || flywheel down; }
trap cleanup EXIT

step "flywheel up"
flywheel up

step "package a small TorchScript model"
artifacts=$(mktemp -d var/demo-artifacts.XXXXXX 2>/dev/null || { mkdir -p var && mktemp -d var/demo-artifacts.XXXXXX; })
python - "$artifacts" <<'PY'
import sys
from pathlib import Path

import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()
folder = Path(sys.argv[1]) / "torchscript"
folder.mkdir(parents=True, exist_ok=True)
torch.jit.script(model).save(str(folder / "model.pt"))
print(f"wrote {folder / 'model.pt'}")
PY

step "flywheel models publish demo-forecaster"
flywheel models publish demo-forecaster "$artifacts" --framework pytorch --param seed=0 --metric rmse=0.0
rm -rf "$artifacts"

step "flywheel models list"
flywheel models list
flywheel models list demo-forecaster
latest=$(flywheel models list demo-forecaster --json | python -c 'import json,sys; print(json.load(sys.stdin)["versions"][-1]["version"])')
flywheel models alias demo-forecaster champion "$latest" --reason "make demo"

step "flywheel models show demo-forecaster:champion"
flywheel models show demo-forecaster:champion

step "flywheel status"
flywheel status
