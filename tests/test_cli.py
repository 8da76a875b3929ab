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


def _project(root: Path) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("seed: 0\n")
    (root / "metrics" / "evaluate.json").write_text(
        '{"test": {"auc": 0.8125, "auc_ci_low": 0.5, "auc_ci_high": 1.0, "ci": 0.95, "n": 12, "acc": 0.75}}')
    return root.resolve()


def test_mrl_results_from_a_subdirectory_of_a_path_with_spaces(tmp_path, monkeypatch, capsys):
    """Regression: in a subdirectory `mrl results` said "run dvc repro first"; under a path with spaces it
    printed an `mlflow ui --backend-store-uri sqlite:///...` command that failed when pasted."""
    import shlex

    from pipeline.cli import main

    root = _project(tmp_path / "my project")
    (root / "data" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(root / "data" / "deeper")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["results"]) == 0
    cap = capsys.readouterr()
    assert f"results: project {root} (its dvc.yaml and params.yaml; found above {root / 'data' / 'deeper'})" in cap.err
    assert "results: test video AUC 0.812 [0.500, 1.000] (95% bootstrap interval) on 12 test videos" in cap.out
    assert "results: ../../metrics/evaluate.json, ../../plots/roc.png" in cap.out   # paths from where you are
    line = next(x for x in cap.out.splitlines() if x.startswith("results: MLflow UI: "))
    assert shlex.split(line[len("results: MLflow UI: "):]) == [
        "mlflow", "ui", "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--port", "5000"]


def test_mrl_outside_a_project_says_so(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["results"]) == 2
    assert (f"results: no project here: no folder from {tmp_path.resolve()} upwards holds dvc.yaml and "
            "params.yaml") in capsys.readouterr().err


def test_mrl_detect_from_a_subdirectory_reads_the_project_s_model_files(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    root = _project(tmp_path / "proj")
    (root / "models").mkdir()
    (root / "models" / "encoder.pt").write_bytes(b"cut short")
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    assert main(["detect", "clip.mp4", "--out", "out", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (f"detect: project {root} (found above {root / 'sub'}): reading models/encoder.pt, models/relation.pt, "
            "params.yaml there") in err
    assert f"detect: cannot load the model: {root}/models/encoder.pt: not a model file this project wrote" in err


def test_detect_and_serve_take_the_same_model_options_from_one_definition():
    """One home for the model options (pipeline/model_options.py): `mrl detect` and `mrl serve` parse the same
    flags with the same defaults, and `mrl serve` adds only its own (--metrics, --lock)."""
    from pipeline.cli import build_parser
    from pipeline.model_options import PROJECT_DEFAULTS, add_model_arguments
    import argparse

    def model_opts(ap: argparse.ArgumentParser, title_start: str) -> dict:
        group = next(g for g in ap._action_groups if (g.title or "").startswith(title_start))
        return {a.dest: (tuple(a.option_strings), a.default, a.metavar) for a in group._group_actions}

    subs = next(a for a in build_parser("detect")._actions if isinstance(a, argparse._SubParsersAction)).choices
    ref = model_opts(_ref_parser(add_model_arguments), "model")
    detect, serve = model_opts(subs["detect"], "model"), model_opts(subs["serve"], "model")
    assert detect == ref and {k: v for k, v in serve.items() if k not in ("metrics", "lock")} == ref
    assert {k: v[1] for k, v in ref.items() if k in PROJECT_DEFAULTS} == PROJECT_DEFAULTS
    assert set(serve) - set(ref) == {"metrics", "lock"}


def _ref_parser(add):
    import argparse

    ap = argparse.ArgumentParser()
    add(ap)
    return ap


def test_mrl_serve_from_a_subdirectory_loads_the_project_s_model_as_detect_does(tmp_path, monkeypatch, capsys):
    """The model loading is shared too (scoring.detect.models.load_from_options): `mrl serve` from a subfolder
    reads the project's files, and a broken encoder file is named with detect's words."""
    from pipeline.cli import main

    root = _project(tmp_path / "proj")
    (root / "models").mkdir()
    (root / "models" / "encoder.pt").write_bytes(b"cut short")
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    assert main(["serve", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (f"serve: project {root} (found above {root / 'sub'}): reading models/encoder.pt, models/relation.pt, "
            "params.yaml, metrics/evaluate.json, dvc.lock there") in err
    assert f"serve: cannot load the model: {root}/models/encoder.pt: not a model file this project wrote" in err
