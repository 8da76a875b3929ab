"""End to end: the real `dvc repro` on tiny demo data in a temporary git repo, then a masking experiment,
then a fresh clone of the committed result.

Checks the metrics, exactly which stages ran (the experiment must re-run only train_relation and
evaluate), `dvc exp show`, and the MLflow runs (stages, tags, params, per-epoch metrics); in the fresh
clone, that MLflow follows the workspace although DVC skipped stages there (the `track` stage).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from helpers import load_script
from pipeline import paths
from workspace import _env, commit_all, make_workspace, run_dvc, stages_run

pytestmark = pytest.mark.slow

ALL_STAGES = list(paths.STAGES)  # demo ... train_relation, baseline, peer, evaluate, then track (always)
TINY = {
    "demo": {"frames": 16, "size": 96, "clips_per_source": 1, "crf": 20,
             "sources": ["0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
                         "astronaut.png", "grace_hopper.jpg", "obama.jpg", "biden.jpg", "single_face.jpg",
                         "carphone_pristine.mp4"], "london": ["001", "002"]},
    "clip": {"frames": 8, "snippet_length": 4},
    "crop": {"image_size": 32, "detect_max_side": 96, "max_windows_per_video": 1},
    "encoder": {"backbone": "small3d", "width": 4, "heads": 4, "pretrained": None},
    "train_encoder": {"epochs": 2, "batch_size": 4, "relation": {"hidden": 8, "mlp_hidden": 8}},
    "relation": {"hidden": 8, "mlp_hidden": 8},
    "train_relation": {"epochs": 3, "batch_size": 4},
    "evaluate": {"bootstrap": 50},
}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("e2e") / "repo", TINY)
    full = run_dvc(ws, "repro")
    exp = run_dvc(ws, "exp", "run", "-S", "mask.rate=0.6")
    # a queued experiment runs in a fresh copy of the committed repository: it must reuse the encoder there
    commit_all(ws, "dvc repro")
    run_dvc(ws, "exp", "run", "--queue", "-n", "queued-03", "-S", "mask.rate=0.3")
    run_dvc(ws, "queue", "start", "-j", "1", timeout=900)  # returns when the worker has emptied the queue
    for _ in range(300):
        status = run_dvc(ws, "queue", "status").stdout
        if "queued-03" in status and ("Success" in status or "Failed" in status):
            break
        time.sleep(2)
    queued = run_dvc(ws, "queue", "logs", "queued-03")
    return ws, full, exp, queued


@pytest.fixture(scope="module")
def fresh_clone(pipeline_run, tmp_path_factory):
    """A new user's first run: `git clone` of the committed repro, its DVC cache shared (data and models as
    committed, no 10-minute re-crop), the relation model missing so DVC re-runs train_relation here and,
    its model hashing as committed, skips evaluate; a fresh MLflow store (the clone's own mlflow.db)."""
    ws = pipeline_run[0]
    clone = tmp_path_factory.mktemp("clone") / "repo"
    git = lambda *a, cwd=clone: subprocess.run(a, cwd=cwd, env=_env(), check=True, capture_output=True, text=True)  # noqa: E731
    git("git", "clone", "-q", str(ws), str(clone), cwd=ws)
    committed = {s: json.loads((clone / paths.run_record(s)).read_text())["run_id"]
                 for s in ("train_encoder", "train_relation", "evaluate")}
    run_dvc(clone, "cache", "dir", "--local", str(ws / ".dvc" / "cache"))
    run_dvc(clone, "checkout")
    (clone / paths.RELATION).unlink()
    out = run_dvc(clone, "repro")
    return clone, out, committed


def test_full_repro_runs_every_stage_and_writes_metrics(pipeline_run):
    ws, full, _, _ = pipeline_run
    assert stages_run(full.stdout) == ALL_STAGES
    m = json.loads((ws / "metrics/evaluate.json").read_text())
    test = m["test"]
    assert test["n"] == test["n_pos"] + test["n_neg"] and test["n_pos"] > 0 and test["n_neg"] > 0
    assert 0.0 <= test["auc"] <= 1.0 and 0.0 <= test["acc"] <= 1.0
    assert test["auc_ci_low"] <= test["auc"] <= test["auc_ci_high"]
    assert "demo" in m["per_dataset"]
    assert any(k.startswith("demo/") for k in m["per_method"])
    for name, fam in m["per_method"].items():  # each family's AUC comes with its bootstrap interval
        assert fam["auc_ci"][0] <= fam["auc"] <= fam["auc_ci"][1], name
    assert (ws / "plots/roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    roc = json.loads((ws / "plots/roc.json").read_text())["roc"]
    assert roc and {"fpr", "tpr"} <= set(roc[0])
    crops = json.loads((ws / "data/crops/report.json").read_text())
    assert crops["totals"]["windows"] > 0
    base = json.loads((ws / "metrics/baseline.json").read_text())
    assert base["test"]["n"] == test["n"] and 0.0 <= base["test"]["auc"] <= 1.0
    peer = json.loads((ws / "metrics/peer.json").read_text())
    assert peer["test"]["n"] == test["n"] and 0.0 <= peer["test"]["auc"] <= 1.0
    for name, other in (("baseline", base), ("peer", peer)):  # MRL paired with each on the same test videos
        c = m[f"vs_{name}"]
        assert c["n"] == test["n"] and c["note"] is None and c["auc_mrl"] == test["auc"]
        assert c["auc_other"] == pytest.approx(other["test"]["auc"])
        assert c["diff"] == pytest.approx(test["auc"] - other["test"]["auc"])
        assert c["ci"][0] <= c["ci"][1] and 0.0 <= c["p_above"] <= 1.0
    # evaluate.groups defaults to the demo's people.csv (its London people): every test person counted once
    g = m["groups"]
    listed = set(pd.read_csv(ws / "data/demo/people.csv", dtype=str).identity)
    idx = pd.read_csv(ws / "data/crops/index.csv", dtype=str, keep_default_na=False)
    tested = set(idx[idx.split == "test"].identity)
    assert g["file"] == "data/demo/people.csv" and listed == {"london_001", "london_002"}   # TINY's London people
    assert sum(v["n_people"] for v in g["gender"].values()) == len(tested & listed)
    assert g["unlisted"]["n_people"] == len(tested - listed)


def test_mask_experiment_reruns_only_the_mask_stages(pipeline_run):
    ws, _, exp, queued = pipeline_run
    # `scan` always runs (a second); its output is unchanged, so neither manifest nor anything after it re-runs
    assert stages_run(exp.stdout) == ["scan", "train_relation", "evaluate", "track"]
    assert stages_run(queued.stdout) == ["scan", "train_relation", "evaluate", "track"], queued.stdout[-3000:]
    show = json.loads(run_dvc(ws, "exp", "show", "--json", "--all-commits").stdout)  # exps of both commits
    rows = {}  # mask.rate -> metrics files DVC shows for that row (the baseline commit and each experiment)
    for entry in show:
        revs = [entry] + [r for e in (entry.get("experiments") or []) for r in e.get("revs", [])]
        for r in revs:
            data = r.get("data") or {}
            params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
            if r.get("rev") != "workspace" and "mask" in params:
                rows[params["mask"]["rate"]] = set(data.get("metrics") or {})
    assert {0.6, 0.3} <= set(rows), rows  # every experiment has its own row (queued one included)
    assert "metrics/evaluate.json" in rows[0.6]  # the experiment's own metrics are in its row


def test_grid_report_reads_the_experiments_of_the_commits_named(pipeline_run, monkeypatch):
    """scripts/grids.py ``report --rev``: one `dvc exp show --rev` per commit, in place of --all-commits."""
    grids = load_script("grids")
    ws, _, _, _ = pipeline_run
    monkeypatch.chdir(ws)
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    head = grids.read_finished(["HEAD"])       # the queued experiment's commit only
    assert set(head) == {"queued-03"} and grids._params(head["queued-03"])["mask"]["rate"] == 0.3
    both = grids.read_finished(["HEAD~1", "HEAD"])   # the first commit's experiment (rate 0.6) as well
    assert len(both) == 2 and sorted(grids._params(d)["mask"]["rate"] for d in both.values()) == [0.3, 0.6]
    got = grids.grid_experiments("mask", both, {"queued-03": "minimal-03"})
    assert list(got) == ["mask-minimal-03"] and got["mask-minimal-03"] is both["queued-03"]
    with pytest.raises(SystemExit, match="dvc exp show --json --rev no-such-commit"):
        grids.read_finished(["no-such-commit"])


def test_mlflow_has_every_run_tagged(pipeline_run):
    ws, _, _, _ = pipeline_run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mrl")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    by_stage: dict = {}
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("mrl.role") == "experiment"}
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["git_rev"] != "unknown"
        if r.info.run_id not in parents:
            by_stage.setdefault(r.data.tags["stage"], []).append(r)
            assert r.data.tags["mlflow.parentRunId"] in parents
            assert r.info.run_name == r.data.tags["stage"]   # a child is named by its stage
            assert "mrl.restored_from" not in r.data.tags    # every stage ran here (or is the baseline's run)
    # one parent per experiment (repro, the -S mask.rate=0.6 one, the queued one), each with its params and
    # test metrics; the queued one re-ran two stages, and names the encoder run it reuses
    by_rate = {p.data.params["mask.rate"]: p for p in parents.values()}
    assert sorted(by_rate) == ["0.3", "0.5", "0.6"] and by_rate["0.3"].info.run_name == "queued-03"
    assert by_rate["0.5"].info.run_name.startswith("repro-")
    assert all("test_auc" in p.data.metrics and "encoder.heads" in p.data.params for p in parents.values())
    assert all("baseline.test_auc" in p.data.metrics for p in parents.values())  # the track stage's sync
    for p in parents.values():                       # every run.<stage> tag names a run of this store
        for k, v in p.data.tags.items():
            if k.startswith("run."):
                assert client.get_run(v).info.status == "FINISHED", (p.info.run_name, k)
    kids = lambda p: sorted(r.data.tags["stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id)  # noqa: E731
    assert kids(by_rate["0.5"]) == ["evaluate", "train_encoder", "train_relation"]
    assert kids(by_rate["0.3"]) == kids(by_rate["0.6"]) == ["evaluate", "train_relation"]
    assert {k: len(v) for k, v in by_stage.items()} == {"train_encoder": 1, "train_relation": 3, "evaluate": 3}
    rel = sorted(by_stage["train_relation"], key=lambda r: r.info.start_time)
    assert [r.data.params["mask.rate"] for r in rel] == ["0.5", "0.6", "0.3"]
    assert rel[0].data.tags["dvc_exp_name"] == "workspace" and rel[1].data.tags["dvc_exp_name"] != "workspace"
    hist = client.get_metric_history(rel[1].info.run_id, "val_auc")
    assert [m.step for m in hist] == [1, 2, 3]
    ev = sorted(by_stage["evaluate"], key=lambda r: r.info.start_time)[-1]
    assert "test_auc" in ev.data.metrics
    arts = {a.path for a in client.list_artifacts(ev.info.run_id)}
    assert {"roc.png", "evaluate.json"} <= arts
    enc = by_stage["train_encoder"][0]
    assert by_rate["0.3"].data.tags["run.train_encoder"] == enc.info.run_id
    assert {m.key for m in client.get_metric_history(enc.info.run_id, "train_od")} == {"train_od"}


def test_fresh_clone_mlflow_has_every_result_though_dvc_skipped_stages(fresh_clone):
    clone, out, committed = fresh_clone
    ran = stages_run(out.stdout)
    assert ran == ["scan", "train_relation", "track"], out.stdout[-3000:]  # evaluate: inputs as committed
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mrl").experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("mrl.role") == "experiment"]
    assert len(parents) == 1
    parent = parents[0]
    kids = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(kids) == {"train_encoder", "train_relation", "evaluate"} and len(runs) == 4
    for stage, run in kids.items():          # made from the committed outputs exactly when DVC skipped it
        assert (run.data.tags.get("mrl.restored_from") == "committed outputs") == (stage not in ran), stage
        assert parent.data.tags[f"run.{stage}"] == run.info.run_id != committed[stage]
    ev = json.loads((clone / "metrics/evaluate.json").read_text())["test"]
    base = json.loads((clone / "metrics/baseline.json").read_text())["test"]
    m = parent.data.metrics
    assert (m["test_auc"], m["test_auc_ci_low"], m["test_auc_ci_high"]) == (ev["auc"], ev["auc_ci_low"], ev["auc_ci_high"])
    assert (m["baseline.test_auc"], m["baseline.test_auc_ci_low"]) == (base["auc"], base["auc_ci_low"])
    assert kids["evaluate"].data.metrics["test_auc"] == ev["auc"]
    hist = client.get_metric_history(kids["train_encoder"].info.run_id, "val_auc")
    assert [h.step for h in hist] == list(range(1, len(hist) + 1)) and hist  # per-epoch, from plots/*.csv
    # `mrl results` points at the runs list with the view whose columns hold the test AUC
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "results", "--port", "5123"], cwd=clone, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    exp_id = client.get_experiment_by_name("mrl").experiment_id
    assert f"http://127.0.0.1:5123/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey=mrl" \
        in res.stdout and "mrl compare" in res.stdout and "--port 5123" in res.stdout


def test_evaluate_reports_the_auc_per_group_of_a_people_file(pipeline_run):
    """Last in this file: it runs the evaluate stage once more (outside DVC) with evaluate.groups set."""
    ws = pipeline_run[0]
    idx = pd.read_csv(ws / "data/crops/index.csv", dtype=str, keep_default_na=False)
    people = sorted(idx[idx.split == "test"].identity.unique())
    assert len(people) >= 2
    listed = people[:-1]                                        # the last test person is not in the file
    pd.DataFrame({"identity": listed, "age": 30, "gender": "female",
                  "ethnicity": ["white" if i % 2 else "black" for i in range(len(listed))]}).to_csv(
        ws / "people.csv", index=False)
    params = yaml.safe_load((ws / "params.yaml").read_text())

    def run(groups):
        (ws / "groups.yaml").write_text(yaml.safe_dump({**params, "evaluate": {**params["evaluate"], "groups": groups}}))
        return subprocess.run([sys.executable, "-m", "pipeline.stages.evaluate", "--params", "groups.yaml"], cwd=ws,
                              env=_env(), capture_output=True, text=True)

    before = (ws / "metrics/evaluate.json").read_text()
    res = run("nobody.csv")
    assert res.returncode == 2 and "evaluate: FAILED: evaluate.groups: nobody.csv not found" in res.stderr
    assert "Traceback" not in res.stderr and (ws / "metrics/evaluate.json").read_text() == before
    res = run("people.csv")
    assert res.returncode == 0, res.stderr[-3000:]
    g = json.loads((ws / "metrics/evaluate.json").read_text())["groups"]
    assert g["file"] == "people.csv" and g["min_people"] == 5
    women = g["gender"]["female"]
    assert women["n_people"] == len(listed) and women["n_videos"] == women["n_fake"] + women["n_real"]
    assert (women["auc"] is None) == (len(listed) < 5)
    assert g["unlisted"]["n_people"] == 1
    assert sum(v["n_people"] for v in g["ethnicity"].values()) == len(listed)
