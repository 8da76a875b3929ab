"""MLflow tracking shared by the stages.

Every training and evaluation stage opens one MLflow run, tagged with the stage, the DVC experiment
name and baseline revision (DVC sets DVC_EXP_NAME / DVC_EXP_BASELINE_REV) and the git revision, so that
``dvc exp show`` rows and MLflow runs can be matched. The default store is a sqlite file at the
repository root (``mlflow ui --backend-store-uri sqlite:///mlflow.db``); queued DVC experiments run in a
temporary copy under ``.dvc/tmp/exps/``, so the root is taken from the path above that folder.

DVC's run cache would skip a stage whose deps and params were seen before, and the stage would then
log nothing. The tracked stages therefore declare a ``persist: true`` output (their checkpoint folder),
which DVC excludes from the run cache: each experiment really runs and really logs.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from pipeline.params import flatten
from pipeline.runtime import write_json

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

__all__ = ["project_root", "tracking_uri", "start_run", "git_revision", "log_epoch_metrics", "log_final", "log_evaluation"]

# MLflow is imported inside the functions on purpose (deferred heavy import): importing it costs seconds,
# and the libraries and `mrl detect` import this module without tracking anything.


def project_root(cwd: Optional[Path] = None) -> Path:
    cwd = Path(cwd or os.getcwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i] == ".dvc" and parts[i + 1] == "tmp" and parts[i + 2] == "exps":
            return Path(*parts[:i])
    return cwd


def tracking_uri(configured: Optional[str] = None) -> str:
    """MLFLOW_TRACKING_URI wins, then params ``mlflow.tracking_uri``, then sqlite at the project root."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def git_revision(cwd: Optional[Path] = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def start_run(stage: str, params: Any, mlflow_params: Any = None, extra_tags: Optional[dict] = None) -> Iterator[Any]:
    """Open an MLflow run for ``stage`` with all params flattened and the DVC/git tags set."""
    import mlflow  # deferred: see the note at the top

    mlflow.set_tracking_uri(tracking_uri(getattr(mlflow_params, "tracking_uri", None)))
    artifact_root = project_root() / "mlruns"
    name = getattr(mlflow_params, "experiment", None) or "mrl"
    if mlflow.get_experiment_by_name(name) is None:
        with contextlib.suppress(Exception):
            mlflow.create_experiment(name, artifact_location=artifact_root.as_uri())
    mlflow.set_experiment(name)
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    tags = {
        "stage": stage,
        "dvc_exp_name": exp_name or "workspace",
        "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "git_rev": git_revision(),
    }
    tags.update(extra_tags or {})
    run_name = f"{stage}:{exp_name}" if exp_name else stage
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        flat = {k: ("" if v is None else v) for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 90):  # MLflow caps a batch at 100 params
            mlflow.log_params(dict(items[i:i + 90]))
        yield run


def log_epoch_metrics(metrics: dict, epoch: int) -> None:
    """Per-epoch metrics of a training loop (NaN values left out) into the active run."""
    import mlflow  # deferred: see the note at the top

    mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}, step=epoch)


def log_final(run: Any, summary: dict, *, artifacts: Iterable[Path] = (), model: Any = None,
              run_dir: Optional[Path] = None, metrics: Optional[dict] = None) -> None:
    """End of a training stage: ``best_val_*`` metrics of ``summary``, extra ``metrics``, the artifact files,
    the model (MLflow's pickle format, ~1 s; torch.export would fix the input shapes) and the run id in
    ``run_dir/mlflow_run.json``."""
    import mlflow  # deferred: see the note at the top
    import mlflow.pytorch

    mlflow.log_metrics({f"best_{k}": v for k, v in summary.items()
                        if isinstance(v, float) and k.startswith("val_") and v == v})
    if metrics:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and v == v})
    for f in artifacts:
        mlflow.log_artifact(str(f))
    if model is not None:
        mlflow.pytorch.log_model(model.cpu(), name="model", serialization_format="pickle")
    if run_dir is not None:
        write_json({"run_id": run.info.run_id}, Path(run_dir) / "mlflow_run.json")  # = paths.run_record


def log_evaluation(result: dict, artifacts: Iterable[Path] = ()) -> None:
    """The evaluate stage's metrics into the active run: ``test_*``, per dataset/method AUC/ACC/EER/AP,
    localisation; plus the artifact files."""
    import mlflow  # deferred: see the note at the top

    overall = result["test"]
    mlflow.log_metrics({f"test_{k}": float(v) for k, v in overall.items()
                        if isinstance(v, (int, float)) and v is not None})
    for group in ("per_dataset", "per_method"):
        for name, m in result[group].items():
            for k, v in m.items():
                if isinstance(v, (int, float)) and v is not None and k in ("auc", "acc", "eer", "ap"):
                    mlflow.log_metric(f"{group}.{name}.{k}".replace(" ", "_"), float(v))
    loc = result["localisation"]
    mlflow.log_metrics({f"localisation_{k}": float(v) for k, v in loc.items()
                        if k in ("pointing_game", "energy_inside", "mask_area", "snippets") and v is not None})
    for name, m in (loc.get("per_method") or {}).items():
        for k in ("pointing_game", "energy_inside"):
            if m.get(k) is not None:
                mlflow.log_metric(f"localisation.{name}.{k}".replace(" ", "_"), float(m[k]))
    for f in artifacts:
        mlflow.log_artifact(str(f))
