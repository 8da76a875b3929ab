#!/usr/bin/env bash
# Set up .venv with everything the project needs, from the package registries only.
# Idempotent: a second run only checks. torch-scatter and torch-sparse compile from source the
# first time on a machine (about 25-30 minutes on 2 cores); pip caches the built wheels, so later
# installs on the same machine take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PIP install -q --upgrade "pip>=24" wheel setuptools ninja
# torch first: the compiled extensions below build against it.
$PIP install -q "torch==2.14.1" "torchvision==0.29.1"
if ! "$VENV/bin/python" -c "import torch_scatter, torch_sparse" 2>/dev/null; then
  echo "install: building torch-scatter and torch-sparse (first time on this machine: ~25-30 min; cached afterwards)"
  FORCE_ONLY_CPU=1 MAX_JOBS=${MAX_JOBS:-2} $PIP install --no-build-isolation "torch-scatter==2.1.2" "torch-sparse==0.6.18"
fi
$PIP install -q -e ".[dev]"
# dvc plots show: a page with vega inlined, so plots render offline (falls back to a CDN page without npm)
"$VENV/bin/python" scripts/build_plots_template.py
"$VENV/bin/python" -c "import torch, torch_geometric_temporal, facenet_pytorch, av, h5py, mlflow, dvc; print('install: ok, torch', torch.__version__)"
