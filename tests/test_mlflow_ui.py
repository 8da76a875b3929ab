"""The MLflow UI as a user meets it: a real `mlflow server` (sqlite backend) on 127.0.0.1, two tiny experiments
logged through the stages' tracking functions, checked through the REST API and in headless Chromium.

Chromium is driven with its own command line (``--headless --dump-dom --screenshot``: the DOM after the
page's JavaScript ran, and a PNG), so the test needs no Python browser driver (selenium / playwright and a
matching driver binary). The screenshot is kept under ``test-artifacts/`` (git-ignored).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.cli import ui_url
from pipeline.params import load_params
from pipeline.tracking import sync_workspace
from test_tracking import run_stage

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
EXPERIMENTS = {"mask-minimal-06": (0.6, 0.8), "mask-random-03": (0.3, 0.55)}  # name: (mask.rate, test AUC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on a free port with a fresh sqlite store; its base URL once /health answers."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{(tmp / 'server.log').read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server not ready after 120 s")
        yield base, tmp
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def _search(base: str, exp_id: str, filter_string: str) -> list[dict]:
    return _api(base, "runs/search", {"experiment_ids": [exp_id], "filter": filter_string,
                                      "max_results": 100}).get("runs", [])


@pytest.fixture(scope="module")
def logged(server, tmp_path_factory):
    """Two experiments (train_relation + evaluate each) logged to the server as the stages log them."""
    base, store = server
    work = tmp_path_factory.mktemp("project")
    params = load_params(ROOT / "params.yaml")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("MLFLOW_TRACKING_URI", base)
    mp.setenv("DVC_EXP_BASELINE_REV", "c" * 40)
    try:
        for name, (rate, auc) in EXPERIMENTS.items():
            mp.setenv("DVC_EXP_NAME", name)
            p = params.model_copy(update={"mask": params.mask.model_copy(update={"rate": rate})})
            run_stage("train_relation", p)
            run_stage("evaluate", p, auc=auc)
            # the always-run `track` stage then syncs the workspace's metrics files into the parent
            Path("metrics").mkdir(exist_ok=True)
            Path("metrics/evaluate.json").write_text(json.dumps({"test": {"auc": auc, "auc_ci_low": auc - 0.2,
                                                                          "auc_ci_high": auc + 0.1, "n": 12}}))
            Path("metrics/baseline.json").write_text(json.dumps({"test": {"auc": 0.65, "n": 12}}))
            sync_workspace(p, p.mlflow)
    finally:
        mp.undo()
    return base, _api(base, "experiments/get-by-name?experiment_name=mrl")["experiment"], store


def test_rest_api_has_both_parents_their_children_params_and_metrics(logged):
    base, exp, _ = logged
    assert {t["key"]: t["value"] for t in exp["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    parents = {r["info"]["run_name"]: r for r in _search(base, exp["experiment_id"], "tags.`mrl.role` = 'experiment'")}
    assert set(parents) == set(EXPERIMENTS)
    for name, (rate, auc) in EXPERIMENTS.items():
        run = parents[name]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert run["info"]["status"] == "FINISHED"
        assert params["mask.rate"] == str(rate) and metrics["test_auc"] == auc and "test_auc_ci_low" in metrics
        assert metrics["baseline.test_auc"] == 0.65  # synced from metrics/baseline.json
        kids = _search(base, exp["experiment_id"], f"tags.`mlflow.parentRunId` = '{run['info']['run_id']}'")
        assert sorted(k["info"]["run_name"] for k in kids) == ["evaluate", "train_relation"]  # named by stage


def _page_text(html: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def test_the_experiment_page_renders_the_runs_in_headless_chromium(logged):
    base, exp, store = logged
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: apt-get install -y chromium (.ci/run does it)"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow_experiment_page.png"
    shot.unlink(missing_ok=True)
    url = ui_url(f"sqlite:///{store / 'mlflow.db'}", base=base)   # the page `mrl results` points to
    assert url == f"{base}/#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning" \
                  "&viewStateShareKey=mrl"
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--window-size=1600,1000", "--virtual-time-budget=30000", f"--screenshot={shot}",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    text = _page_text(res.stdout)
    assert "Model training" in text and "Runs" in text, text[:2000]
    for name in EXPERIMENTS:                       # the parents, one row each (children folded under them)
        assert name in text, text[:2000]
    assert "6 matching runs" in text, text[:2000]  # 2 parents + 4 stage runs
    # the experiment's shared view: the test AUC, its interval, the baseline's and the varied param as columns
    assert "You're viewing a shared view" in text, text[:2000]
    for column in ("test_auc", "test_auc_ci_low", "test_auc_ci_high", "baseline.test_auc", "mask.rate"):
        assert f" {column} " in text, (column, text[:2000])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
