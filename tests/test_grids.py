"""scripts/grids.py: the grids it queues and how it reads finished experiments back."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("grids", ROOT / "scripts" / "grids.py")
grids = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grids)


def test_mask_grids_cover_both_strategies_and_ten_rates():
    pts = grids.grid("mask")
    assert len(pts) == 20 and len({name for name, _ in pts}) == 20
    assert {(s["mask.strategy"], s["mask.rate"]) for _, s in pts} == {
        (st, r) for st in ("minimal", "random") for r in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}
    full = dict(grids.grid("mask-full"))
    assert full["mask-full-random-06"] == {"mask.strategy": "random", "mask.rate": 0.6,
                                           "train_encoder.mask.strategy": "random", "train_encoder.mask.rate": 0.6}


def test_only_finished_experiments_are_read_from_dvc_exp_show():
    """A trimmed copy of real `dvc exp show --json` output (experiments of any baseline commit count) (DVC 3.67) taken while a LOFO queue ran."""
    show = json.loads((ROOT / "tests" / "data" / "exp_show_lofo.json").read_text())
    states = {e["name"]: e["executor"]["state"] for e in show[1]["experiments"]}
    got = grids.finished_experiments(show)
    assert set(got) == {n for n, s in states.items() if s == "success"} and got
    for name, data in got.items():
        held = grids._params(data)["data"]["holdout_methods"]
        assert name == f"lofo-{held[0]}"
        per = grids._metric(data, "metrics/evaluate.json")["per_method"]
        assert grids._by_method(per, held[0])["n"] > 0          # keys are dataset/method
