"""pipeline/scoring/paired.py: the paired bootstrap of two detectors on the same videos (a case worked out by
hand, a plain loop with sklearn's roc_auc_score), the pairing of score files, and the AUC per group of people."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.scoring.paired import (
    ComparisonError, compare_with, comparisons, group_aucs, paired_bootstrap, paired_replicates, read_people,
    read_scores,
)
from pipeline.scoring.metrics import bootstrap_auc


def test_hand_computed_case_one_fake_two_reals():
    """One fake (0.6) and two reals. Detector a scores the reals 0.5 and 0.7, detector b 0.7 and 0.5: both have
    AUC 1/2, so the difference is 0. A resample keeps the fake and draws the two reals with replacement: (r1, r1)
    p = 1/4 -> a 1, b 0, difference +1; (r2, r2) p = 1/4 -> -1; mixed p = 1/2 -> 0. So P(a ahead) = 1/4, and
    the 95 % interval of the difference is [-1, 1]."""
    y, a, b = [1, 0, 0], [0.6, 0.5, 0.7], [0.6, 0.7, 0.5]
    r = paired_bootstrap(y, a, b, n=20000, ci=0.95, seed=3)
    assert r["diff"] == 0.0 and r["auc_a"] == 0.5 and r["auc_b"] == 0.5 and r["n"] == 3
    assert r["ci"] == [-1.0, 1.0]
    assert abs(r["p_above"] - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 20000)
    aa, ab = paired_replicates(y, a, b, n=20000, seed=3)
    d = aa - ab
    assert set(np.unique(d).tolist()) == {-1.0, 0.0, 1.0}
    assert abs(np.mean(d == 0) - 0.5) < 0.02 and abs(np.mean(d == -1) - 0.25) < 0.02


def test_a_detector_against_itself_and_against_its_mirror():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(10), np.zeros(14)].astype(int)
    s = rng.random(24) + y * 0.3
    same = paired_bootstrap(y, s, s, n=200)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and same["p_above"] == 0.0
    mirror = paired_bootstrap(y, s, -s, n=200)            # AUC(-s) = 1 - AUC(s) on every resample
    auc = roc_auc_score(y, s)
    assert mirror["diff"] == pytest.approx(2 * auc - 1)
    aa, ab = paired_replicates(y, s, -s, n=200)
    np.testing.assert_allclose(aa + ab, 1.0)


def test_the_replicates_are_a_plain_loop_with_roc_auc_score_and_bootstrap_auc_s_draws():
    """An independent implementation: for each replicate, draw the fakes' and the reals' positions as
    bootstrap_auc does (same seed, same order), then score both detectors with sklearn on that one resample."""
    rng = np.random.default_rng(1)
    y = rng.permutation(np.r_[np.ones(9), np.zeros(13)].astype(int))
    a = np.round(rng.random(22) + 0.4 * y, 2)                  # rounded: ties, which sklearn averages too
    b = np.round(rng.random(22) + 0.2 * y, 2)
    n, seed = 300, 5
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draw = np.random.default_rng(seed)                          # one block: all fakes' draws, then all reals'
    ip = pos[draw.integers(0, pos.size, (n, pos.size))]
    ineg = neg[draw.integers(0, neg.size, (n, neg.size))]
    loop = []
    for k in range(n):
        idx = np.r_[ip[k], ineg[k]]
        loop.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
    aa, ab = paired_replicates(y, a, b, n=n, seed=seed)
    np.testing.assert_allclose(aa - ab, loop, atol=1e-12)
    r = paired_bootstrap(y, a, b, n=n, ci=0.9, seed=seed)
    np.testing.assert_allclose(r["ci"], np.quantile(loop, [0.05, 0.95]))
    assert r["p_above"] == pytest.approx(np.mean(np.asarray(loop) > 1e-12))   # sklearn's ties differ by ~1e-17
    assert r["diff"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    # the same draws as the one-model interval: its percentiles of a's replicates are bootstrap_auc's interval
    np.testing.assert_allclose(np.quantile(aa, [0.05, 0.95]), bootstrap_auc(y, a, n, 0.9, seed))


def test_one_class_or_no_bootstrap():
    r = paired_bootstrap([1, 1], [0.2, 0.3], [0.1, 0.4], n=100)
    assert r["diff"] is None and r["ci"] is None and r["p_above"] is None
    r = paired_bootstrap([1, 0], [0.9, 0.3], [0.1, 0.4], n=0)
    assert r["diff"] == 1.0 and r["ci"] is None


def _videos(scores, labels, methods=None):
    n = len(scores)
    return pd.DataFrame({"dataset": "demo", "method": methods or ["real" if l == 0 else "sbi" for l in labels],
                         "video_id": [f"v{i}" for i in range(n)], "label": labels, "score": scores})


def test_compare_with_pairs_by_video_key_and_says_what_is_missing(tmp_path):
    mine = _videos([0.9, 0.8, 0.3, 0.2, 0.6], [1, 1, 0, 0, 0])
    other = mine.assign(score=[0.4, 0.7, 0.5, 0.1, 0.3]).iloc[::-1]      # another order: paired by key
    path = tmp_path / "other.csv"
    other.iloc[:-1].to_csv(path, index=False)                           # v0 has no score there
    r = compare_with(mine, read_scores(path), path, n=100)
    assert r["n"] == 4 and "1 of MRL's 5 test videos have no score" in r["note"]
    assert r["auc_mrl"] == pytest.approx(roc_auc_score([1, 0, 0, 0], [0.8, 0.3, 0.2, 0.6]))
    assert r["auc_other"] == pytest.approx(roc_auc_score([1, 0, 0, 0], [0.7, 0.5, 0.1, 0.3]))
    other.assign(label=1 - other["label"]).to_csv(path, index=False)
    with pytest.raises(ComparisonError, match="other.csv: video .* has another label there"):
        compare_with(mine, read_scores(path), path)
    with pytest.raises(ComparisonError, match=r"peer_scores.csv not found: run the peer stage first"):
        read_scores(tmp_path / "peer_scores.csv", "peer")
    mine.drop(columns="score").to_csv(path, index=False)
    with pytest.raises(ComparisonError, match=r"other.csv: missing column\(s\) \['score'\]"):
        read_scores(path)


PEOPLE = """identity,age,gender,ethnicity
p01,24,female,white
p02,31,female,white
p03,27,female,east_asian
p04,45,female,black
p05,22,female,white
p06,29,male,white
p07,38,male,black
p08,26,male,east_asian
"""


def _people_videos():
    """Two videos (one real, one fake) per person p01..p08 and an unlisted x01; women's fakes score high."""
    rows = []
    for i, pid in enumerate([f"p0{k}" for k in range(1, 9)] + ["x01"]):
        female = i < 5
        rows.append({"identity": pid, "label": 0, "score": 0.1 + 0.05 * i})
        rows.append({"identity": pid, "label": 1, "score": (0.9 if female else 0.3) - 0.01 * i})
    df = pd.DataFrame(rows)
    return df.assign(dataset="demo", method=np.where(df.label == 1, "sbi", "real"),
                     video_id=[f"{r.identity}_{r.label}" for r in df.itertuples()])


def test_group_aucs_with_a_people_file_written_here(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(PEOPLE)
    vids = _people_videos()
    g = group_aucs(vids, read_people(path), n=200, seed=0)
    women = g["gender"]["female"]
    assert (women["n_people"], women["n_videos"], women["n_fake"], women["n_real"]) == (5, 10, 5, 5)
    sel = vids[vids.identity.isin(["p01", "p02", "p03", "p04", "p05"])]
    assert women["auc"] == pytest.approx(roc_auc_score(sel.label, sel.score)) == 1.0
    assert women["auc_ci"] == list(bootstrap_auc(sel.label, sel.score, 200, 0.95, 0))
    men = g["gender"]["male"]                                    # 3 people: counted, no AUC
    assert men["n_people"] == 3 and men["auc"] is None and men["auc_ci"] is None
    assert men["note"] == "fewer than 5 test people"
    assert g["ethnicity"]["white"]["n_people"] == 4 and g["ethnicity"]["white"]["auc"] is None
    assert set(g["ethnicity"]) == {"white", "east_asian", "black"}
    assert g["unlisted"] == {"n_people": 1, "n_videos": 2}
    assert group_aucs(vids, read_people(path), n=200, min_people=3)["gender"]["male"]["auc"] == pytest.approx(
        roc_auc_score(vids[vids.identity.isin(["p06", "p07", "p08"])].label,
                      vids[vids.identity.isin(["p06", "p07", "p08"])].score))


def test_comparisons_reads_identities_from_the_crop_index(tmp_path):
    vids = _people_videos()
    crops = tmp_path / "crops"
    crops.mkdir()
    vids.assign(split="test", file="x.h5", window=0)[
        ["dataset", "method", "video_id", "label", "split", "identity", "file", "window"]].to_csv(
        crops / "index.csv", index=False)
    (tmp_path / "people.csv").write_text(PEOPLE)
    base = tmp_path / "baseline_scores.csv"
    vids.assign(score=0.5).to_csv(base, index=False)
    out = comparisons(vids.drop(columns="identity"), {"baseline": base}, crops, read_people(tmp_path / "people.csv"),
                      str(tmp_path / "people.csv"), n=100)
    assert out["vs_baseline"]["auc_other"] == 0.5 and out["vs_baseline"]["n"] == len(vids)
    assert out["groups"]["gender"]["female"]["n_people"] == 5 and out["groups"]["file"].endswith("people.csv")
    assert "groups" not in comparisons(vids, {}, crops, None)


@pytest.mark.parametrize("text, message", [
    (None, r"evaluate.groups: .*people.csv not found; point evaluate.groups at a CSV with columns "
           r"identity,age,gender,ethnicity"),
    ("identity,gender\np1,female\n", r"evaluate.groups: .*people.csv lacks column\(s\) \['age', 'ethnicity'\]"),
    (PEOPLE + "p01,50,male,white\n", "evaluate.groups: .*people.csv has identity 'p01' twice"),
])
def test_a_bad_people_file_is_named_with_its_key(tmp_path, text, message):
    path = tmp_path / "people.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ComparisonError, match=message):
        read_people(path)
