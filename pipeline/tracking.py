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
from typing import Any, Iterator, Optional

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

__all__ = ["project_root", "tracking_uri", "start_run", "git_revision"]


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
    import mlflow

    from pipeline.params import flatten

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
