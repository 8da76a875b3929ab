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
    """Runs keyed ``<parent name>/<run name>`` for a stage run (named by its stage), ``<name>`` for a parent."""
    exp = client.get_experiment_by_name("mrl")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    names = {r.info.run_id: r.info.run_name for r in runs}
    out = {}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId")
        out[f"{names[parent]}/{r.info.run_name}" if parent else r.info.run_name] = r
    return out


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
        assert sorted(c.info.run_name for c in children.values()) == ["evaluate", "train_relation"]  # by stage
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


# --------------------------------------------------------------------------- the store follows the workspace

EVALUATE_JSON = {"test": {"auc": 0.61, "auc_ci_low": 0.47, "auc_ci_high": 0.75, "acc": 0.57, "eer": 0.43, "ap": 0.6,
                          "n": 56, "ci": 0.95, "note": None},
                 "per_dataset": {"demo": {"auc": 0.61, "auc_ci": [0.47, 0.75], "n": 56}},
                 "per_method": {"demo/sbi": {"auc": 0.64, "auc_ci": [0.38, 0.87], "acc": 0.6, "n": 35}},
                 "localisation": {"pointing_game": 0.06, "per_method": {}},
                 "targets": {"all_met": False}}
COMMITTED = {  # what a fresh clone holds: metrics, per-epoch history, run records of another machine's store
    "metrics/evaluate.json": EVALUATE_JSON,
    "metrics/baseline.json": {"test": {"auc": 0.65, "auc_ci_low": 0.51, "auc_ci_high": 0.79, "n": 56},
                              "test_per_method": {"demo/sbi": 0.71}, "model": {"features": ["a"]}},
    "metrics/peer.json": {"test": {"auc": 0.55, "auc_ci": [0.40, 0.70], "n": 56}},   # a metrics file of a new stage
    "metrics/train_encoder.json": {"best_epoch": 2, "val_auc": 0.6, "val_loss": 0.69, "run": {"seconds": 3.0}},
    "metrics/train_relation.json": {"best_epoch": 1, "val_auc": 0.58, "val_loss": 0.7, "threshold": 0.51,
                                    "run": {"seconds": 0.5}},
    "runs/train_encoder/mlflow_run.json": {"run_id": "e0ceb3267061432686b7d08ff379c7d2"},
    "runs/train_relation/mlflow_run.json": {"run_id": "1853b665a524482b8e815e184b4a0435"},
    "runs/evaluate/mlflow_run.json": {"run_id": "78118007fe6b402f87c0f4f3559f37c8"},
}
HISTORY = "train_total,val_loss,val_auc,epoch\n12.5,0.71,0.52,1\n8.25,0.69,0.6,2\n"


def _committed_outputs(root: Path) -> None:
    for rel, content in COMMITTED.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(content))
    for stage in ("train_encoder", "train_relation"):
        (root / "plots").mkdir(exist_ok=True)
        (root / "plots" / f"{stage}.csv").write_text(HISTORY)


def _children(client, parent_id: str) -> dict:
    exp = client.get_experiment_by_name("mrl")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id],
                                                           f"tags.`mlflow.parentRunId` = '{parent_id}'")}


def test_sync_of_a_fresh_clone_restores_every_stage_run_and_the_parent_has_every_metrics_file(store, tmp_path):
    from pipeline.tracking import RESTORED_TAG, sync_workspace

    client, params = store
    _committed_outputs(tmp_path)
    res = sync_workspace(params, params.mlflow)
    assert res["restored"] == ["train_encoder", "train_relation", "evaluate"]
    parent = client.get_run(res["parent"])
    m = parent.data.metrics
    assert (m["test_auc"], m["test_auc_ci_low"], m["test_auc_ci_high"], m["test_n"]) == (0.61, 0.47, 0.75, 56)
    assert m["per_method.demo/sbi.auc"] == 0.64 and m["per_method.demo/sbi.auc_ci_high"] == 0.87
    assert (m["baseline.test_auc"], m["baseline.test_auc_ci_low"], m["baseline.test_auc_ci_high"]) == (0.65, 0.51, 0.79)
    assert m["baseline.per_method.demo/sbi.auc"] == 0.71
    assert (m["peer.test_auc"], m["peer.test_auc_ci_low"], m["peer.test_auc_ci_high"]) == (0.55, 0.40, 0.70)
    assert m["train_encoder.best_val_auc"] == 0.6 and m["train_relation.best_val_loss"] == 0.7
    kids = _children(client, parent.info.run_id)
    assert set(kids) == {"train_encoder", "train_relation", "evaluate"}
    for stage, run in kids.items():
        assert run.data.tags[RESTORED_TAG] == "committed outputs" and run.info.status == "FINISHED"
        assert parent.data.tags[f"run.{stage}"] == run.info.run_id       # the tags name runs of this store
        assert run.data.tags["mrl.committed_run_id"] == COMMITTED[f"runs/{stage}/mlflow_run.json"]["run_id"]
        assert run.data.params["mask.rate"] == str(params.mask.rate)
    assert kids["evaluate"].data.metrics["test_auc"] == 0.61
    assert kids["train_relation"].data.metrics["threshold"] == 0.51
    hist = client.get_metric_history(kids["train_encoder"].info.run_id, "train_total")
    assert [(h.step, h.value) for h in hist] == [(1, 12.5), (2, 8.25)]
    arts = {a.path for a in client.list_artifacts(kids["evaluate"].info.run_id)}
    assert arts == {"evaluate.json"}  # the report files this clone has (no ROC or scores were written here)
    # a second sync (the next `dvc repro`) adds nothing: the runs are found in the store now
    again = sync_workspace(params, params.mlflow)
    assert again["restored"] == [] and again["metrics"] == 0 and again["stages"] == res["stages"]
    assert len(client.search_runs([client.get_experiment_by_name("mrl").experiment_id])) == 4


def test_sync_keeps_the_runs_that_ran_here_and_drops_tags_naming_runs_of_another_store(store, tmp_path):
    from pipeline.tracking import RESTORED_TAG, sync_workspace

    client, params = store
    _committed_outputs(tmp_path)
    own = run_stage("train_relation", params)        # DVC re-ran this stage here; the others were skipped
    assert json.loads(Path("runs/train_relation/mlflow_run.json").read_text())["run_id"] == own
    parent_id = client.get_run(own).data.tags["mlflow.parentRunId"]
    assert "run.train_encoder" not in client.get_run(parent_id).data.tags  # the record names a foreign run
    client.set_tag(parent_id, "run.baseline", "0123456789abcdef0123456789abcdef")  # as older versions could
    res = sync_workspace(params, params.mlflow)
    assert res["parent"] == parent_id and res["restored"] == ["train_encoder", "evaluate"]
    tags = client.get_run(parent_id).data.tags
    assert tags["run.train_relation"] == own and RESTORED_TAG not in client.get_run(own).data.tags
    for k, v in tags.items():
        if k.startswith("run."):
            assert client.get_run(v).data.tags["mlflow.parentRunId"] == parent_id, k
    assert "run.baseline" not in tags


def test_the_experiment_view_shows_test_auc_baseline_and_the_params_that_differ(store, tmp_path, monkeypatch):
    from pipeline.tracking import VIEW_KEY, sync_workspace

    client, params = store
    _committed_outputs(tmp_path)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "b" * 40)
    for name, rate in (("mask-06", 0.6), ("mask-03", 0.3)):
        monkeypatch.setenv("DVC_EXP_NAME", name)
        sync_workspace(params.model_copy(update={"mask": params.mask.model_copy(update={"rate": rate})}), params.mlflow)
    exp = client.get_experiment_by_name("mrl")
    view = json.loads(exp.tags[f"mlflow.sharedViewState.{VIEW_KEY}"])
    assert view["selectedColumns"] == ["metrics.`test_auc`", "metrics.`test_auc_ci_low`", "metrics.`test_auc_ci_high`",
                                       "metrics.`baseline.test_auc`", "params.`mask.rate`"]
    from pipeline.cli import ui_url

    url = ui_url(os.environ["MLFLOW_TRACKING_URI"], base="http://127.0.0.1:5001")
    assert url == f"http://127.0.0.1:5001/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" \
                  f"&viewStateShareKey={VIEW_KEY}"


def test_a_logged_model_prints_no_pickle_warning_and_is_in_the_run(store, capfd):
    import torch

    client, params = store
    with start_run("train_relation", params, params.mlflow) as run:
        log_final(run, {"val_auc": 0.6}, model=torch.nn.Linear(2, 2))
    err = capfd.readouterr().err
    assert "Pickle" not in err, err[-2000:]       # MLflow's warning at every logged model (why: the README)
    import logging

    import mlflow.pytorch

    loaded = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")  # as `mrl detect --mlflow-run` loads it
    assert isinstance(loaded, torch.nn.Linear) and loaded.weight.shape == (2, 2)

    assert logging.getLogger("mlflow.pytorch").filters == []  # the filter is gone after the model is logged


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
