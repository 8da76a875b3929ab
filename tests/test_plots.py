"""dvc.yaml's plots as `dvc plots show` draws them: one plot per quantity, titled and with axis labels, the
training and validation losses on axes of their own, nothing drawn twice, report plots titled as reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PLOTS = {pid: spec for item in DVC["plots"] for pid, spec in item.items()}


def _drawn(spec: dict) -> list[tuple[str, str]]:
    """(file, field) pairs a top-level plot draws on its y axis (x for a horizontal bar chart)."""
    axis = spec["x"] if spec.get("template") == "bar_horizontal" else spec["y"]
    return [(f, field) for f, fields in axis.items() for field in ([fields] if isinstance(fields, str) else fields)]


def test_only_top_level_plots_so_nothing_is_drawn_twice():
    assert all("plots" not in stage for stage in DVC["stages"].values()), \
        "a stage-level plots: entry is drawn again beside the top-level plots"
    drawn = [pair for spec in PLOTS.values() for pair in _drawn(spec)]
    assert len(drawn) == len(set(drawn)), drawn
    assert ("plots/train_encoder.csv", "val_auc") in drawn and ("plots/roc.json", "tpr") in drawn


def test_every_plot_has_a_title_and_axis_labels_and_one_quantity():
    for pid, spec in PLOTS.items():
        assert spec.get("title") and spec.get("x_label") and spec.get("y_label"), pid
        fields = {field for _, field in _drawn(spec)}
        losses = {f for f in fields if "loss" in f or f == "train_total"}
        assert len(losses) <= 1 and (not losses or fields == losses), f"{pid}: losses share an axis: {fields}"


def test_plots_of_reports_are_titled_as_reports():
    for pid, spec in PLOTS.items():
        from_reports = all(f.startswith("reports/") for f, _ in _drawn(spec))
        assert from_reports == spec["title"].startswith("Report"), pid


def test_dvc_plots_show_renders_exactly_the_top_level_plots_with_their_titles():
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    shown = json.loads(res.stdout)
    assert not shown.get("errors"), shown.get("errors")
    assert set(shown["data"]) == set(PLOTS)  # no extra plot per file path
    for pid, renders in shown["data"].items():
        assert len(renders) == 1 and renders[0]["content"]["title"]["text"] == PLOTS[pid]["title"], pid
