"""pipeline/tracking.py against a real sqlite MLflow store: one parent run per experiment with the stage runs
as children, the experiment kind, a killed stage's run marked KILLED, and a fresh database created once
when two stages start at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.params import load_params
from pipeline.tracking import EXPERIMENT_KIND, log_evaluation, log_final, start_run

ROOT = Path(__file__).resolve().parents[1]
RESULT = {"test": {"auc": 0.75, "auc_ci_low": 0.5, "auc_ci_high": 0.9, "acc": 0.7, "eer": 0.3, "ap": 0.8, "n": 12},
          "per_dataset": {"demo": {"auc": 0.75, "n": 12}}, "per_method": {"demo/sbi": {"auc": 0.6, "n": 3}},
          "localisation": {"pointing_game": 0.4}}


def run_stage(stage: str, params, auc: float = 0.75) -> str:
    """What a tracked stage does with MLflow (train_relation / evaluate), in this process; its run id."""
    with start_run(stage, params, params.mlflow) as run:
        if stage == "evaluate":
            log_evaluation({**RESULT, "test": {**RESULT["test"], "auc": auc}})
        else:
            log_final(run, {"val_auc": 0.6, "best_epoch": 2}, run_dir=Path("runs") / stage)
        return run.info.run_id


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A fresh sqlite store in a temp project folder (cwd) with the project's params."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for k in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(k, raising=False)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri), load_params(ROOT / "params.yaml")


def runs_by_name(client) -> dict:
    exp = client.get_experiment_by_name("mrl")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=100)}


def test_each_experiment_is_one_parent_run_with_its_stage_runs_as_children(store, monkeypatch):
    client, params = store
    run_stage("train_relation", params)            # plain `dvc repro`: named after git rev + params
    run_stage("evaluate", params, auc=0.7)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    for name, rate, auc in (("mask-minimal-06", 0.6, 0.8), ("mask-minimal-03", 0.3, 0.55)):
        monkeypatch.setenv("DVC_EXP_NAME", name)
        p = params.model_copy(update={"mask": params.mask.model_copy(update={"rate": rate})})
        run_stage("train_relation", p)
        run_stage("evaluate", p, auc=auc)
    runs = runs_by_name(client)
    exp = client.get_experiment_by_name("mrl")
    assert exp.tags["mlflow.experimentKind"] == EXPERIMENT_KIND == "custom_model_development"
    parents = {n: r for n, r in runs.items() if r.data.tags.get("mrl.role") == "experiment"}
    repro = [n for n in parents if n.startswith("repro-unknown-")]  # no git here: rev "unknown"
    assert sorted(parents) == sorted(repro + ["mask-minimal-06", "mask-minimal-03"]) and len(repro) == 1
    for name, rate, auc in ((repro[0], 0.5, 0.7), ("mask-minimal-06", 0.6, 0.8), ("mask-minimal-03", 0.3, 0.55)):
        parent = parents[name]
        assert parent.info.status == "FINISHED"
        assert parent.data.params["mask.rate"] == str(rate) and "train_encoder.lambda_od" in parent.data.params
        assert parent.data.metrics["test_auc"] == auc and parent.data.metrics["per_method.demo/sbi.auc"] == 0.6
        assert parent.data.metrics["train_relation.best_val_auc"] == 0.6
        children = {n: r for n, r in runs.items() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert set(children) == {f"{name}/train_relation", f"{name}/evaluate"}
        assert all(c.data.params["mask.rate"] == str(rate) for c in children.values())
        assert parent.data.tags["run.evaluate"] == children[f"{name}/evaluate"].info.run_id
    assert json.loads(Path("runs/train_relation/mlflow_run.json").read_text())["run_id"] == \
        runs["mask-minimal-03/train_relation"].info.run_id


def test_a_stage_that_fails_marks_its_experiment_failed(store, monkeypatch):
    client, params = store
    monkeypatch.setenv("DVC_EXP_NAME", "broken")
    with pytest.raises(RuntimeError, match="boom"):
        with start_run("train_relation", params, params.mlflow):
            raise RuntimeError("boom")
    runs = runs_by_name(client)
    assert runs["broken"].info.status == "FAILED" and runs["broken/train_relation"].info.status == "FAILED"


KILLED_STAGE = textwrap.dedent("""
    import os, signal
    from pipeline.params import load_params
    from pipeline.tracking import start_run
    p = load_params({params!r})
    with start_run("train_relation", p, p.mlflow):
        os.kill(os.getpid(), signal.SIGKILL)    # as `kill -9` of a running stage
""")


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def test_a_killed_stage_run_is_marked_killed_when_the_next_stage_starts(store, tmp_path, monkeypatch):
    client, params = store
    monkeypatch.setenv("DVC_EXP_NAME", "resumed")
    proc = subprocess.run([sys.executable, "-c", KILLED_STAGE.format(params=str(ROOT / "params.yaml"))],
                          cwd=tmp_path, env={**_env(tmp_path), "DVC_EXP_NAME": "resumed"})
    assert proc.returncode == -9
    before = runs_by_name(client)
    assert before["resumed/train_relation"].info.status == "RUNNING"   # what the UI showed forever
    killed = before["resumed/train_relation"].info.run_id
    new = run_stage("train_relation", params)                        # the resumed stage
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(new).info.status == "FINISHED"
    parent = runs_by_name(client)["resumed"]
    assert parent.info.status == "FINISHED" and parent.data.tags["run.train_relation"] == new


TWO_AT_ONCE = textwrap.dedent("""
    import sys, time
    from pipeline.params import load_params
    from pipeline.tracking import start_run
    p = load_params({params!r})
    while time.time() < {start}:                 # both start their first MLflow call together
        time.sleep(0.01)
    with start_run(sys.argv[1], p, p.mlflow):
        pass
""")


@pytest.mark.slow
def test_two_stages_starting_at_once_on_a_new_database_both_succeed(tmp_path):
    import time

    script = TWO_AT_ONCE.format(params=str(ROOT / "params.yaml"), start=time.time() + 25)
    procs = [subprocess.Popen([sys.executable, "-c", script, stage], cwd=tmp_path, env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for stage in ("train_relation", "evaluate")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mrl").experiment_id])
    assert sorted(r.data.tags.get("stage", "parent") for r in runs) == ["evaluate", "parent", "train_relation"]


def test_the_paired_differences_reach_mlflow_as_metrics():
    from pipeline.tracking import evaluation_metrics
    result = {"test": {"auc": 0.7, "n": 10}, "per_dataset": {}, "per_method": {}, "localisation": {},
              "vs_baseline": {"diff": 0.05, "ci": [-0.1, 0.2], "p_above": 0.7},
              "vs_peer": {"diff": None, "ci": None, "p_above": None}}
    m = evaluation_metrics(result)
    assert {k: v for k, v in m.items() if k.startswith("vs_")} == {
        "vs_baseline.diff": 0.05, "vs_baseline.ci_low": -0.1, "vs_baseline.ci_high": 0.2, "vs_baseline.p_above": 0.7}
    del result["vs_baseline"], result["vs_peer"]                 # an evaluate.json from before the comparisons
    assert not any(k.startswith("vs_") for k in evaluation_metrics(result))
