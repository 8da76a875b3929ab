"""A fresh, self-contained copy of the project as a git + DVC repository.

A test helper (``from workspace import make_workspace``), used by the end-to-end tests and by
``bench/mask_experiment.py``: both need to run the real ``dvc repro`` /
``dvc exp run`` on the real stage code, in a repository of their own, with params of their own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

from pipeline.params import merge_overrides

__all__ = ["PROJECT_ROOT", "make_workspace", "merge_overrides", "commit_all", "run_dvc", "stages_run"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_COPY = ["pipeline", "graph_models", "feature_cache", "peer_models", "dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml",
         ".gitignore"]


def _env() -> dict:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ""  # the workspace's own copy of the packages is imported (cwd)
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", GIT_AUTHOR_NAME="mrl",
               GIT_AUTHOR_EMAIL="mrl@localhost", GIT_COMMITTER_NAME="mrl", GIT_COMMITTER_EMAIL="mrl@localhost")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def make_workspace(dst: Path, params_override: Optional[dict] = None) -> Path:
    """Copy the project sources to ``dst``, apply ``params_override``, ``git init`` + ``dvc init``, commit."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in _COPY:
        src = PROJECT_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dst / name)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params = merge_overrides(params, params_override or {})
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env()
    run = lambda *a: subprocess.run(a, cwd=dst, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q", "-b", "main")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    run(sys.executable, "-m", "dvc", "config", "core.check_update", "false")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "workspace")
    return dst


def commit_all(ws: Path, message: str) -> None:
    """``git add -A && git commit`` in the workspace (what a user does after ``dvc repro``: dvc.lock, metrics
    and the runs/<stage>/mlflow_run.json records; queued experiments start from the committed state)."""
    for args in (["git", "add", "-A"], ["git", "commit", "-q", "-m", message]):
        subprocess.run(args, cwd=ws, env=_env(), check=True, capture_output=True, text=True)


def run_dvc(ws: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` in the workspace with the current interpreter's environment; raise with its output."""
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=_env(), capture_output=True,
                         text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}")
    return res


def stages_run(output: str) -> list[str]:
    """Names of the stages DVC actually ran, from its ``Running stage 'X':`` lines."""
    import re

    return re.findall(r"Running stage '([^']+)'", output)
