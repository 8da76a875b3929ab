"""`mrl compare` on a real DVC repository with two experiments (a one-stage pipeline that writes metrics
files in the project's formats): it fits 80 columns and shows what matters, from `dvc exp show --json`
and, for the per-family intervals that `dvc exp show` drops, from the experiments' committed files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE = textwrap.dedent('''
    import json, os, yaml
    p = yaml.safe_load(open("params.yaml"))
    r = p["mask"]["rate"]
    auc = round(0.5 + r / 2, 3)                      # a known answer per experiment
    os.makedirs("metrics", exist_ok=True)
    per = {f"demo/{fam}": {"auc": round(auc - d, 3), "auc_ci": [round(auc - d - 0.1, 3), round(auc - d + 0.1, 3)],
                           "n": 14} for fam, d in (("faceswap", 0.05), ("mouth_reenact", 0.1))}
    json.dump({"test": {"auc": auc, "auc_ci_low": round(auc - 0.15, 3), "auc_ci_high": round(auc + 0.1, 3),
                        "ci": 0.95, "n": 28}, "per_method": per}, open("metrics/evaluate.json", "w"))
    json.dump({"test": {"auc": 0.652, "n": 28}, "test_per_method": {"demo/faceswap": 0.433, "demo/mouth_reenact": 0.485},
               "model": {"features": ["lap_c"]}}, open("metrics/baseline.json", "w"))
    json.dump({"test": {"auc": 0.571, "n": 28}}, open("metrics/peer.json", "w"))
''')
DVC_YAML = """stages:
  evaluate:
    cmd: python stage.py
    deps: [stage.py]
    params: [mask]
    metrics:
      - metrics/evaluate.json: {cache: false}
      - metrics/baseline.json: {cache: false}
      - metrics/peer.json: {cache: false}
"""
PARAMS = {"seed": 0, "mask": {"strategy": "minimal", "rate": 0.5, "in_inference": False},
          "encoder": {"heads": 8, "backbone": "small3d"}}
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "mrl", "GIT_AUTHOR_EMAIL": "mrl@localhost",
       "GIT_COMMITTER_NAME": "mrl", "GIT_COMMITTER_EMAIL": "mrl@localhost", "PYTHONPATH": str(ROOT)}
LONG = "ablation-spatial-attention-mask-06"   # longer than the name column


def _run(repo: Path, *args: str) -> str:
    res = subprocess.run(list(args), cwd=repo, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(args)}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    import yaml

    repo = tmp_path_factory.mktemp("compare")
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    _run(repo, "git", "init", "-q", "-b", "main")
    _run(repo, *dvc, "init", "-q")
    _run(repo, *dvc, "config", "core.analytics", "false")
    _run(repo, *dvc, "repro", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-q", "-m", "baseline")
    _run(repo, *dvc, "exp", "run", "-q", "-n", LONG, "-S", "mask.rate=0.6", "-S", "encoder.heads=4")
    _run(repo, "git", "checkout", "-q", "--", "params.yaml")  # `dvc exp run` leaves its params in the workspace
    _run(repo, *dvc, "exp", "run", "-q", "-n", "mask-random-03", "-S", "mask.rate=0.3", "-S", "mask.strategy=random")
    return repo


def _compare(repo: Path, *args: str) -> list[str]:
    return _run(repo, sys.executable, "-m", "pipeline.cli", "compare", "--width", "80", *args).splitlines()


def test_compare_fits_80_columns_and_shows_params_test_auc_interval_baseline_and_other_models(repo):
    lines = _compare(repo)
    assert all(len(ln) <= 80 for ln in lines), "\n".join(ln for ln in lines if len(ln) > 80)
    assert lines[0].split() == ["experiment", "changed", "params", "test", "AUC", "[95%", "CI]", "baseline", "peer"]
    assert any(ln.startswith("main@") and " - " in ln and "0.750 [0.600, 0.850]" in ln for ln in lines)
    rnd = next(i for i, ln in enumerate(lines) if "mask-random-03" in ln)
    assert "0.650 [0.500, 0.750]" in lines[rnd] and "0.652" in lines[rnd] and "0.571" in lines[rnd]
    assert "mask.rate=0.3" in lines[rnd] and "mask.strategy=random" in lines[rnd + 1]
    assert "encoder.heads" not in " ".join(lines[rnd:rnd + 2])  # only what this experiment changed
    # the long name wraps in its column, indented under its commit; its AUC is on its first line
    first = next(i for i, ln in enumerate(lines) if ln.startswith("  ablation-"))
    block = lines[first:first + 4]
    assert "0.800 [0.650, 0.900]" in block[0]
    assert "".join(ln[:20].strip() for ln in block).startswith(LONG)
    assert "encoder.heads=4" in " ".join(block) and "mask.rate=0.6" in " ".join(block)


def test_compare_families_reads_the_intervals_dvc_exp_show_drops(repo):
    lines = _compare(repo, "--families", "mask-*")
    assert all(len(ln) <= 80 for ln in lines)
    text = "\n".join(lines)
    assert LONG not in text  # the name filter
    fam = lines[lines.index("per fake family (test split):"):]
    exp_rows = [ln for ln in fam if "mask-random-03" in ln]
    assert exp_rows and "demo/faceswap" in exp_rows[0] and "0.600 [0.500, 0.700]" in exp_rows[0] \
        and "0.433" in exp_rows[0]
    nxt = fam[fam.index(exp_rows[0]) + 1]
    assert "demo/mouth_reenact" in nxt and "0.550 [0.450, 0.650]" in nxt and "0.485" in nxt


def test_compare_outside_a_dvc_repository_says_where_to_run_it(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "compare"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "mrl compare: `dvc exp show --json` failed" in res.stderr
    assert "Traceback" not in res.stderr
