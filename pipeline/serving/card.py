"""What ``mrl serve`` says about its model: a name, and the test AUC with its interval when the pipeline
recorded one FOR THESE MODEL FILES.

Model files (``models/encoder.pt`` + ``models/relation.pt``): the ``evaluate`` stage's
``metrics/evaluate.json``, used only when ``dvc.lock`` records that ``evaluate`` read model files with the
same MD5 as the loaded ones and wrote that very metrics file (same MD5): a metrics file of another model, or
one edited since, is not shown as this model's. An MLflow model: the test metrics of its run's experiment
(the parent run, where ``evaluate`` logs ``test_auc``), for a relation learner logged by ``train_relation``.
Otherwise the card says why no test AUC is shown.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from pipeline.scoring.detect import LoadedModel
from pipeline.tracking import tracking_uri as default_uri

__all__ = ["model_card", "card_from_evaluation"]


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _name(model: LoadedModel) -> str:
    enc = model.source.get("encoder_params") or {}
    shape = f"N={model.encoder.heads}, T={model.snippets} x D={model.snippet_length} frames"
    if model.source.get("mlflow_model"):
        return f"MRL {model.source['mlflow_model']} ({shape})"
    sha = (model.source.get("encoder_sha256") or "")[:8]
    backbone = enc.get("backbone", "")
    return f"MRL {backbone} ({shape}; {Path(model.source.get('encoder', 'encoder.pt')).name} {sha})".replace("  ", " ")


def card_from_evaluation(ev: dict, source: str) -> dict:
    t = ev.get("test") or {}
    auc, lo, hi = t.get("auc"), t.get("auc_ci_low"), t.get("auc_ci_high")
    return {"test_auc": auc, "auc_ci": [lo, hi] if lo is not None and hi is not None else None,
            "ci": t.get("ci", 0.95), "n_test": t.get("n"), "card_source": source, "note": None}


def _from_files(model: LoadedModel, metrics: Path, lock: Path) -> dict:
    none = {"test_auc": None, "auc_ci": None, "ci": None, "n_test": None, "card_source": None}
    if not metrics.exists():
        return {**none, "note": f"no test AUC: {metrics} does not exist (run the pipeline: dvc repro)"}
    if not lock.exists():
        return {**none, "note": f"no test AUC: {lock} is missing, so {metrics} cannot be tied to these model files"}
    try:
        stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("evaluate") or {}
    except yaml.YAMLError as exc:
        return {**none, "note": f"no test AUC: {lock} cannot be read ({exc})"}
    deps = {d.get("md5") for d in stage.get("deps", [])}
    outs = {d.get("md5") for d in stage.get("outs", [])} | {d.get("md5") for d in stage.get("metrics", [])}
    files = [Path(model.source["encoder"]), Path(model.source["relation"])]
    if not all(_md5(f) in deps for f in files):
        return {**none, "note": f"no test AUC: {metrics} was computed for other model files than "
                                f"{files[0]} and {files[1]} (their MD5 differs from {lock})"}
    if _md5(metrics) not in outs:
        return {**none, "note": f"no test AUC: {metrics} is not the file the evaluate stage wrote ({lock})"}
    return card_from_evaluation(json.loads(metrics.read_text()), str(metrics))


def _from_mlflow(model: LoadedModel, tracking_uri: Optional[str]) -> dict:
    none = {"test_auc": None, "auc_ci": None, "ci": None, "n_test": None, "card_source": None}
    run_id = model.source.get("mlflow_run_id")
    if not run_id or not model.source.get("encoder"):
        return {**none, "note": "no test AUC: the evaluate stage scores the train_relation stage's model, "
                                "not this one"}
    from mlflow.tracking import MlflowClient  # deferred on purpose (seconds): only for --mlflow-run/--mlflow-model

    client = MlflowClient(tracking_uri or default_uri())
    run = client.get_run(run_id)
    parent_id = run.data.tags.get("mlflow.parentRunId")
    m = client.get_run(parent_id).data.metrics if parent_id else {}
    if "test_auc" not in m:
        return {**none, "note": f"no test AUC: the experiment of run {run_id} has no test_auc (evaluate did not run)"}
    return {"test_auc": m["test_auc"], "ci": 0.95, "n_test": m.get("test_n"),
            "auc_ci": [m["test_auc_ci_low"], m["test_auc_ci_high"]] if "test_auc_ci_low" in m else None,
            "card_source": f"MLflow run {parent_id}", "note": None}


def model_card(model: LoadedModel, metrics: str | Path = "metrics/evaluate.json", lock: str | Path = "dvc.lock",
               tracking_uri: Optional[str] = None) -> dict[str, Any]:
    """``{name, test_auc, auc_ci, ci, n_test, card_source, note, threshold, crop_source, warnings}``."""
    if model.source.get("mlflow_model"):
        card = _from_mlflow(model, tracking_uri)
    else:
        card = _from_files(model, Path(metrics), Path(lock))
    return {"name": _name(model), **card, "threshold": model.threshold, "crop_source": model.crop_source,
            "window_frames": model.frames, "snippet_length": model.snippet_length, "warnings": list(model.warnings)}
