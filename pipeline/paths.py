"""Every file and folder a DVC stage declares, defined once.

``dvc.yaml`` lists the same paths (``tests/test_layout.py`` checks that its deps and outs agree with
:data:`STAGE_OUTPUTS` and :data:`STAGE_INPUTS`); the stages and the libraries import them from here and
never from each other. Paths are relative to the repository root (DVC runs every stage there). The three
folders that are also params (``demo.out_dir``, ``data.manifest``, ``crop.out_dir``) default to the
values below, and ``params.yaml`` must keep them so (also tested). :func:`find_project_root` finds that
root from any folder below it (``mrl`` run from a subdirectory).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["DEMO_DIR", "LISTING", "MANIFEST", "CROPS", "ENCODER", "FEATURES", "FEATURE_MAPS", "RELATION", "SCORES", "ROC_JSON", "ROC_PNG",
           "METRICS_DIR", "BASELINE_SCORES", "PEER_SCORES",
           "STAGES", "run_dir", "run_record", "metrics_file", "plots_file", "STAGE_OUTPUTS", "STAGE_INPUTS",
           "PROJECT_MARKERS", "find_project_root"]

# data
DEMO_DIR = Path("data/demo")                 # demo: real and generated fake clips, masks, splits.csv
LISTING = Path("data/listing.json")          # scan: fingerprint of the dataset folders (always run)
MANIFEST = Path("data/manifest.csv")         # manifest: one row per video
CROPS = Path("data/crops")                   # crop: HDF5 face windows, index.csv, report.json
FEATURES = Path("data/features.h5")          # cache_features: per-snippet vertices
FEATURE_MAPS = Path("data/feature_maps.h5")  # cache_features: backbone maps F_0 of the windows Grad-CAM explains

# models
ENCODER = Path("models/encoder.pt")          # train_encoder: backbone + STA (+ its relation head)
RELATION = Path("models/relation.pt")        # train_relation: masked edges + GConv-GRU + MLP

# reports
SCORES = Path("reports/video_scores.csv")    # evaluate: one row per test video
ROC_JSON = Path("plots/roc.json")
ROC_PNG = Path("plots/roc.png")
BASELINE_SCORES = Path("reports/baseline_scores.csv")  # baseline: one row per test video (evaluate pairs them)
PEER_SCORES = Path("reports/peer_scores.csv")          # peer: one row per test video (evaluate pairs them)
METRICS_DIR = Path("metrics")                # every stage's metrics/<stage>.json (read whole by `track`)

#: The DVC stages in the order ``dvc repro`` runs them (``baseline`` and ``peer`` are side branches off ``crop``
#: whose per-video scores ``evaluate`` compares with MRL's; ``track``, always run, comes after every stage that
#: writes metrics); ``pipeline/stages/<name>.py`` is each one's entry point.
STAGES = ("demo", "scan", "manifest", "crop", "train_encoder", "cache_features", "train_relation", "baseline", "peer",
          "evaluate", "track")


def run_dir(stage: str) -> Path:
    """The run folder of a tracked stage: its training checkpoint (git-ignored, not a DVC output) and
    :func:`run_record`."""
    return Path("runs") / stage


def run_record(stage: str) -> Path:
    """``runs/<stage>/mlflow_run.json``, the MLflow run id of the stage's last run: a ``persist: true``,
    git-tracked DVC output. Persistent outputs keep a stage out of DVC's run cache (so every run really
    runs and logs to MLflow), and a git-tracked one is present in a queued experiment's fresh copy of the
    repository, so DVC does not re-run an unchanged stage there for a missing output."""
    return run_dir(stage) / "mlflow_run.json"


def metrics_file(stage: str) -> Path:
    return METRICS_DIR / f"{stage}.json"


def plots_file(stage: str) -> Path:
    """Per-epoch history of a training stage (CSV, one row per epoch)."""
    return Path("plots") / f"{stage}.csv"


#: What each stage writes (outs, metrics and plots in dvc.yaml).
STAGE_OUTPUTS: dict[str, list[Path]] = {
    "demo": [DEMO_DIR],
    "scan": [LISTING],
    "manifest": [MANIFEST],
    "crop": [CROPS],
    "train_encoder": [ENCODER, run_record("train_encoder"), metrics_file("train_encoder"), plots_file("train_encoder")],
    "cache_features": [FEATURES, FEATURE_MAPS],
    "train_relation": [RELATION, run_record("train_relation"), metrics_file("train_relation"),
                       plots_file("train_relation")],
    "evaluate": [SCORES, run_record("evaluate"), metrics_file("evaluate"), ROC_JSON, ROC_PNG],
    "baseline": [metrics_file("baseline"), BASELINE_SCORES],
    "peer": [metrics_file("peer"), PEER_SCORES],
    "track": [],   # writes to the MLflow store only
}

#: The data and models each stage reads (its non-code deps in dvc.yaml).
STAGE_INPUTS: dict[str, list[Path]] = {
    "demo": [],
    "scan": [DEMO_DIR],
    "manifest": [DEMO_DIR, LISTING],
    "crop": [MANIFEST, DEMO_DIR, LISTING],  # the videos' bytes, which a manifest row (path, size) cannot see
    "train_encoder": [CROPS],
    "cache_features": [ENCODER, CROPS],
    "train_relation": [FEATURES, ENCODER],
    "evaluate": [RELATION, ENCODER, FEATURES, FEATURE_MAPS, CROPS, BASELINE_SCORES, PEER_SCORES, DEMO_DIR],  # DEMO_DIR: people.csv
    "baseline": [CROPS],
    "peer": [CROPS],  # and the videos named in the crop files (a changed video changes its crop file)
    "track": [METRICS_DIR],   # the folder: every stage writing a metrics file comes first, a new one included
}


#: the files that make a folder the project's root
PROJECT_MARKERS = ("dvc.yaml", "params.yaml")


def find_project_root(start: Optional[str | Path] = None) -> Optional[Path]:
    """The nearest folder from ``start`` (default: the working directory) upwards that holds
    :data:`PROJECT_MARKERS` (as git finds ``.git``); None outside a project."""
    cur = Path(start or os.getcwd()).resolve()
    for d in (cur, *cur.parents):
        if all((d / m).is_file() for m in PROJECT_MARKERS):
            return d
    return None
