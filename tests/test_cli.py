"""The `mrl` command's first seconds: `mrl --help` imports nothing heavy (bench/cli_startup.py times it),
no warning is printed, and `mrl detect --help` reads as help text and says which MLflow run holds a model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default"}  # every warning shown, once


def _mrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_mrl_help_lists_the_commands_and_prints_nothing_else():
    res = _mrl("--help")
    assert res.returncode == 0 and res.stderr == ""
    for command in ("detect", "results", "compare"):
        assert f"    {command} " in res.stdout


def test_detect_help_is_help_text_without_warnings_and_names_the_mlflow_runs_with_models():
    res = _mrl("detect", "--help")
    assert res.returncode == 0
    assert res.stderr == "", res.stderr[-2000:]  # torch's FutureWarning about PyG's torch.jit.script was first
    out = res.stdout
    assert "--mlflow-run RUN_ID" in out and "--trust-pickle" in out
    assert "which MLflow run holds a model" in out and "train_relation" in out and "train_encoder" in out
    assert "runs/train_relation/mlflow_run.json" in out
    for markup in (":func:", ":mod:", "``"):        # a docstring's markup is not help text
        assert markup not in out, markup
    assert max(len(line) for line in out.splitlines()) <= 80
