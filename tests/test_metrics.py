"""pipeline.scoring.metrics against hand-computed cases and scikit-learn."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from pipeline.scoring.metrics import (binary_metrics, bootstrap_auc, breakdown, equal_error_rate, roc_points,
                              save_roc_png, threshold_at_eer, video_scores)


def _hand_windows() -> pd.DataFrame:
    """2 real and 2 fake videos with 3, 1, 2, 2 windows. Dyadic probabilities so the means are
    exact: real A (.25 .5 .75) -> .5, real B (.25) -> .25, fake C (.25 .75) -> .5,
    fake D (1 .5) -> .75. Fake C has the same id as real A ("000") under another method."""
    rows = [("demo", "real", "000", 0, 0.25), ("demo", "real", "000", 0, 0.5), ("demo", "real", "000", 0, 0.75),
            ("demo", "real", "001", 0, 0.25),
            ("demo", "faceswap", "000", 1, 0.25), ("demo", "faceswap", "000", 1, 0.75),
            ("demo", "sbi", "002", 1, 1.0), ("demo", "sbi", "002", 1, 0.5)]
    return pd.DataFrame(rows, columns=["dataset", "method", "video_id", "label", "prob"]).assign(split="test")


def test_video_scores_mean_over_windows_keyed_by_method():
    v = video_scores(_hand_windows())
    got = {(r.method, r.video_id): (r.label, r.score, r.n_windows) for r in v.itertuples()}
    assert got == {("real", "000"): (0, 0.5, 3), ("real", "001"): (0, 0.25, 1),
                   ("faceswap", "000"): (1, 0.5, 2), ("sbi", "002"): (1, 0.75, 2)}
    assert list(v.columns) == ["dataset", "method", "video_id", "label", "score", "n_windows", "split"]


def test_same_id_in_two_methods_and_two_datasets_kept_apart():
    w = pd.DataFrame({"dataset": ["a", "a", "b", "a"], "method": ["real", "faceswap", "real", "real"],
                      "video_id": ["7", "7", "7", "7"], "label": [0, 1, 0, 0], "prob": [0.1, 0.9, 0.3, 0.5]})
    v = video_scores(w)
    assert len(v) == 3
    assert v.set_index(["dataset", "method"])["score"].to_dict() == {
        ("a", "faceswap"): 0.9, ("a", "real"): 0.3, ("b", "real"): 0.3}


def test_video_scores_refuses_inconsistent_labels_and_missing_columns():
    w = _hand_windows()
    w.loc[0, "label"] = 1
    with pytest.raises(ValueError, match="disagree on label"):
        video_scores(w)
    with pytest.raises(ValueError, match="missing column"):
        video_scores(_hand_windows().drop(columns="method"))


def test_hand_computed_auc_ap_eer_acc():
    v = video_scores(_hand_windows())
    m = binary_metrics(v["label"], v["score"], threshold=0.5)
    # fake/real pairs: C(.5)~A(.5) tie = 1/2, C>B, D>A, D>B  -> 3.5 / 4
    assert m["auc"] == pytest.approx(0.875)
    # ranked: D fake (P=1, R=1/2), tie {A real, C fake} (P=2/3, R=1) -> 1/2*1 + 1/2*2/3
    assert m["ap"] == pytest.approx(0.5 + 1 / 3)
    # ROC vertices (fpr, fnr): (0,1) (0,.5) (.5,0) (1,0): FPR=FNR on the segment (0,.5)-(.5,0) at .25
    assert m["eer"] == pytest.approx(0.25) and m["eer_threshold"] == pytest.approx(0.75)
    # score >= .5 is fake: A wrong, B, C, D right
    assert m["acc"] == pytest.approx(0.75)
    assert (m["n"], m["n_pos"], m["n_neg"], m["note"]) == (4, 2, 2, None)
    # window-level AUC would be a different (wrong) number
    w = _hand_windows()
    assert roc_auc_score(w["label"], w["prob"]) != pytest.approx(0.875)


def test_hand_computed_eer_on_a_vertex():
    # thresholds .9 .6 .4 .1: (fpr, fnr) = (0,.5) (.5,.5) (.5,0) (1,0): equal at threshold .6
    eer, th = equal_error_rate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert eer == pytest.approx(0.5) and th == pytest.approx(0.6)
    assert threshold_at_eer([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == pytest.approx(0.6)


def test_against_sklearn_on_random_videos():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    m = binary_metrics(y, s, threshold=0.4)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["acc"] == pytest.approx(np.mean((s >= 0.4) == y))
    fpr, tpr, _ = roc_curve(y, s)
    eer_ref = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert m["eer"] == pytest.approx(eer_ref, abs=1e-6)
    # the chosen threshold gives FPR and FNR close to the EER
    th = m["eer_threshold"]
    fpr_th, fnr_th = np.mean(s[y == 0] >= th), np.mean(s[y == 1] < th)
    assert abs(fpr_th - m["eer"]) < 0.02 and abs(fnr_th - m["eer"]) < 0.02


def test_single_class_subset_does_not_crash():
    m = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2], threshold=0.5)
    assert m["auc"] is None and m["eer"] is None and m["ap"] is None and m["eer_threshold"] is None
    assert m["acc"] == pytest.approx(2 / 3) and "one class" in m["note"] and m["n_neg"] == 3
    assert binary_metrics([], [])["acc"] is None
    assert bootstrap_auc([1, 1], [0.2, 0.9], n=10) == (None, None)
    assert roc_points([1, 1], [0.2, 0.9]) == []
    with pytest.raises(ValueError, match="cannot choose a threshold"):
        threshold_at_eer([1, 1], [0.2, 0.9])


def test_bootstrap_contains_point_auc_and_is_deterministic():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40, int), np.ones(60, int)]
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    auc = roc_auc_score(y, s)
    lo, hi = bootstrap_auc(y, s, n=300, ci=0.95, seed=1)
    assert lo < auc < hi and 0.0 <= lo and hi <= 1.0
    assert bootstrap_auc(y, s, n=300, ci=0.95, seed=1) == (lo, hi)
    assert bootstrap_auc(y, s, n=300, ci=0.95, seed=2) != (lo, hi)
    lo50, hi50 = bootstrap_auc(y, s, n=300, ci=0.5, seed=1)
    assert lo <= lo50 <= hi50 <= hi
    assert bootstrap_auc(y, s, n=0) == (None, None)


def test_breakdown_method_vs_same_dataset_reals_and_per_dataset():
    v = pd.concat([video_scores(_hand_windows()),
                   pd.DataFrame({"dataset": ["other"] * 2, "method": ["real", "sbi"], "video_id": ["x", "y"],
                                 "label": [0, 1], "score": [0.9, 0.1], "n_windows": [1, 1], "split": "test"})])
    by_m = breakdown(v, "method", threshold=0.5)
    assert set(by_m) == {"demo/faceswap", "demo/sbi", "other/sbi"}  # real methods get no entry
    # faceswap C(.5) vs reals A(.5), B(.25): 1.5/2 ; sbi D(.75) vs A, B: 1
    assert by_m["demo/faceswap"]["auc"] == pytest.approx(0.75) and by_m["demo/faceswap"]["n"] == 3
    assert by_m["demo/sbi"]["auc"] == pytest.approx(1.0)
    assert by_m["other/sbi"]["auc"] == pytest.approx(0.0) and by_m["other/sbi"]["n_neg"] == 1
    by_d = breakdown(v, "dataset", n_bootstrap=20)
    assert by_d["demo"]["auc"] == pytest.approx(0.875) and by_d["demo"]["n"] == 4
    assert len(by_d["demo"]["auc_ci"]) == 2
    with pytest.raises(ValueError, match="by must be"):
        breakdown(v, "video_id")


def test_roc_points_json_ready():
    import json

    pts = roc_points([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], drop_intermediate=False)
    assert [(p["fpr"], p["tpr"]) for p in pts] == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]
    assert pts[0]["threshold"] is None and pts[1]["threshold"] == pytest.approx(0.9)
    json.loads(json.dumps(pts, allow_nan=False))


def test_save_roc_png(tmp_path):
    out = tmp_path / "plots" / "roc.png"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    curves = {"test": (y, rng.random(50)), "real only": ([0, 0], [0.2, 0.3])}
    assert save_roc_png(curves, out) == out
    data = out.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["roc.png"]  # no temp left


def test_vectorised_bootstrap_auc_matches_sklearn_with_ties():
    from pipeline.scoring.metrics import _auc_rows

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (4, 30))
    y[:, :2] = [0, 1]
    s = rng.integers(0, 5, (4, 30)) / 4.0  # many ties
    np.testing.assert_allclose(_auc_rows(y, s), [roc_auc_score(a, b) for a, b in zip(y, s)])


def _videos(rng, fakes: dict, n_real: int, dataset: str = "demo") -> pd.DataFrame:
    """Video rows: ``fakes`` maps a family to its fake scores; the reals draw from the same few levels (ties)."""
    rows = [(dataset, "real", f"r{i}", 0, v) for i, v in enumerate(rng.integers(0, 6, n_real) / 5.0)]
    rows += [(dataset, m, f"{m}{i}", 1, v) for m, ss in fakes.items() for i, v in enumerate(ss)]
    return pd.DataFrame(rows, columns=["dataset", "method", "video_id", "label", "score"])


def test_the_test_auc_is_the_fake_count_weighted_mean_of_the_families_and_the_worst_one_caps_it():
    from pipeline.scoring.evaluation import check_targets, family_ceiling
    rng = np.random.default_rng(3)
    fakes = {"a": rng.integers(0, 6, 24) / 5.0, "b": rng.integers(0, 6, 12) / 5.0, "c": rng.integers(0, 6, 36) / 5.0}
    v = _videos(rng, fakes, 40)
    per_method = breakdown(v, "method")
    n = {m: len(s) for m, s in fakes.items()}
    mean = sum(n[m] * per_method[f"demo/{m}"]["auc"] for m in fakes) / sum(n.values())
    assert roc_auc_score(v.label, v.score) == pytest.approx(mean, abs=1e-12)       # the identity, ties and all
    worst = min(per_method, key=lambda k: per_method[k]["auc"])
    # every family but the worst scored above every real video: sklearn's AUC is the ceiling, exactly
    perfect = {m: (s if f"demo/{m}" == worst else s + 2.0) for m, s in fakes.items()}
    cap = check_targets({"auc": mean, "auc_ci_low": 0.0}, per_method)["ceiling"]
    assert cap["family"] == worst
    both = pd.concat([v[v.label == 0], _videos(rng, perfect, 0)])
    assert cap["value"] == pytest.approx(roc_auc_score(both.label, both.score), abs=1e-12)
    # by hand: a family with a quarter of the fakes at 0.5 caps the test AUC at 1 - 0.25 * 0.5 = 0.875, and the
    # 0.90 target needs it at 1 - 4 * 0.1 = 0.6
    quarter = {"demo/m": {"auc": 0.5, "n_pos": 24}, "demo/f": {"auc": 0.83, "n_pos": 72}}
    assert family_ceiling(quarter, "demo/m")["value"] == pytest.approx(0.875)
    assert family_ceiling(quarter, "demo/m")["family_auc_needed"] == pytest.approx(0.6)
    # several datasets: fakes of one are also ranked against reals of another, so no ceiling is claimed
    two = breakdown(pd.concat([v, _videos(rng, {"a": fakes["a"]}, 10, "other")]), "method")
    assert family_ceiling(two, worst) is None and family_ceiling(per_method, None) is None


def test_targets_report_each_value_the_worst_family_and_whether_all_are_met():
    from pipeline.scoring.evaluation import check_targets
    per_method = {"demo/faceswap": {"auc": 0.95}, "demo/sbi": {"auc": 0.79}, "demo/flicker": {"auc": None}}
    t = check_targets({"auc": 0.93, "auc_ci_low": 0.85}, per_method)
    assert t["test_auc"] == {"value": 0.93, "target": 0.90, "met": True}
    assert t["test_auc_ci_low"]["met"] is True
    assert t["worst_family_auc"] == {"value": 0.79, "target": 0.80, "met": False, "family": "demo/sbi"}
    assert t["all_met"] is False
    ok = check_targets({"auc": 0.90, "auc_ci_low": 0.80}, {"demo/sbi": {"auc": 0.80}})
    assert ok["all_met"] is True                                   # the bounds themselves count as met
    none = check_targets({"auc": None, "auc_ci_low": None}, {})
    assert none["all_met"] is False and none["worst_family_auc"]["family"] is None
