"""scripts/paired.py: two settings compared on the same test videos, per seed and over the seeds."""
import subprocess

import numpy as np
import pandas as pd
import pytest

from helpers import load_script
from pipeline.scoring.paired import paired_bootstrap

paired = load_script("paired")


def _scores(scores, labels=(1, 1, 0, 0), prefix="v"):
    return pd.DataFrame({"dataset": "demo", "method": ["faceswap" if y else "real" for y in labels],
                         "video_id": [f"{prefix}{i}" for i in range(len(labels))], "label": list(labels),
                         "score": list(scores)})


def test_one_pair_pooled_is_the_paired_bootstrap_itself():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    a, b = _scores(rng.random(60), labels), _scores(rng.random(60), labels)
    p = paired.aligned(a, b, ("a", "b"))
    ref = paired_bootstrap(p["label"].to_numpy(), p["score_a"].to_numpy(), p["score_b"].to_numpy(), n=300, seed=5)
    got = paired.pooled_difference([p], n=300, seed=5)
    assert got["diff"] == pytest.approx(ref["diff"]) and got["ci"] == pytest.approx(ref["ci"])
    assert got["p_above"] == pytest.approx(ref["p_above"]) and got["pairs"] == 1 and got["n"] == 60


def test_pooled_point_is_the_mean_of_hand_computed_differences():
    # fakes v0, v1 and reals v2, v3. A ranks both fakes above both reals: AUC 1.
    # B1 puts v1 below v2 only: 3 of 4 (fake, real) pairs right, AUC 0.75. B2 ties everything: AUC 0.5.
    a = _scores([0.9, 0.8, 0.2, 0.1])
    b1, b2 = _scores([0.9, 0.3, 0.4, 0.1]), _scores([0.5, 0.5, 0.5, 0.5])
    pairs = [paired.aligned(a, b1, ("a", "b1")), paired.aligned(a, b2, ("a", "b2"))]
    got = paired.pooled_difference(pairs, n=200, seed=0)
    assert got["diff"] == pytest.approx((0.25 + 0.5) / 2)
    assert got["ci"][0] >= 0.0 and got["p_above"] <= 1.0
    same = paired.pooled_difference([paired.aligned(a, a, ("a", "a"))], n=200, seed=0)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and same["p_above"] == 0.0


def test_rows_are_aligned_by_video_not_by_position():
    a = _scores([0.9, 0.8, 0.2, 0.1])
    shuffled = a.iloc[[2, 0, 3, 1]].reset_index(drop=True)
    p = paired.aligned(a, shuffled, ("a", "shuffled"))
    assert (p["score_a"] == p["score_b"]).all()


def test_runs_on_other_videos_are_refused_with_both_names():
    a, other = _scores([0.9, 0.8, 0.2, 0.1]), _scores([0.9, 0.8, 0.2, 0.1], prefix="w")
    with pytest.raises(SystemExit, match="run-a and run-b were not scored on the same videos"):
        paired.aligned(a, other, ("run-a", "run-b"))
    with pytest.raises(SystemExit, match="pair them one to one"):
        paired.main(["--a", "x,y", "--b", "z"])


def test_reads_an_experiment_by_name_from_its_git_ref_and_a_commit(tmp_path, monkeypatch, capsys):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@localhost")
    git("config", "user.name", "t")
    (tmp_path / "reports").mkdir()
    _scores([0.9, 0.3, 0.4, 0.1]).to_csv(tmp_path / paired.SCORES, index=False)   # the committed run: AUC 0.75
    git("add", ".")
    git("commit", "-qm", "base")
    base = git("rev-parse", "HEAD")
    _scores([0.9, 0.8, 0.2, 0.1]).to_csv(tmp_path / paired.SCORES, index=False)   # the experiment: AUC 1
    git("commit", "-qam", "exp")
    # an experiment ref as DVC writes it: refs/exps/<2 hex>/<38 hex>/<name>
    git("update-ref", f"refs/exps/{base[:2]}/{base[2:]}/better", "HEAD")
    git("reset", "-q", "--hard", base)
    assert paired.run_scores("better", tmp_path)["score"].tolist() == [0.9, 0.8, 0.2, 0.1]
    assert paired.run_scores("HEAD", tmp_path)["score"].tolist() == [0.9, 0.3, 0.4, 0.1]
    with pytest.raises(SystemExit, match="'nosuch' is neither a finished experiment"):
        paired.run_scores("nosuch", tmp_path)
    monkeypatch.chdir(tmp_path)
    paired.main(["--a", "better", "--b", "HEAD", "--bootstrap", "100"])
    out = capsys.readouterr().out
    assert "better - HEAD: AUC 1.000 - 0.750 = +0.250" in out and "on 4 videos" in out


def test_method_keeps_that_family_s_fakes_and_the_reals_of_its_dataset(tmp_path, capsys):
    # demo: fakes faceswap v0 v1, sbi v2 v3, reals v4 v5; other: one real v6 and one faceswap fake v7.
    # On demo/faceswap A ranks both fakes over both reals (AUC 1) and B ranks v1 below v4 (3 of 4 pairs: 0.75);
    # the sbi fakes (A's lowest scores) and the other dataset's real (A's highest) must not count.
    def frame(scores):
        return pd.DataFrame({"dataset": ["demo"] * 6 + ["other"] * 2,
                             "method": ["faceswap", "faceswap", "sbi", "sbi", "real", "real", "real", "faceswap"],
                             "video_id": [f"v{i}" for i in range(8)], "label": [1, 1, 1, 1, 0, 0, 0, 1],
                             "score": scores})
    fa, fb = tmp_path / "a.csv", tmp_path / "b.csv"
    frame([0.9, 0.8, 0.0, 0.0, 0.5, 0.4, 1.0, 0.5]).to_csv(fa, index=False)
    frame([0.9, 0.3, 0.9, 0.9, 0.5, 0.2, 0.0, 0.5]).to_csv(fb, index=False)
    kept = paired.one_family(pd.read_csv(fa), "demo/faceswap", "a")
    assert kept["video_id"].tolist() == ["v0", "v1", "v4", "v5"]
    assert paired.main(["--a", str(fa), "--b", str(fb), "--method", "demo/faceswap", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "AUC 1.000 - 0.750 = +0.250" in out and "on 4 videos" in out
    assert paired.one_family(pd.read_csv(fa), "sbi", "a")["video_id"].tolist() == ["v2", "v3", "v4", "v5"]
    with pytest.raises(SystemExit, match=r"faceswap' fakes in datasets demo, other; "
                                         r"name one, e.g. --method demo/faceswap"):
        paired.one_family(pd.read_csv(fa), "faceswap", "a")
    with pytest.raises(SystemExit, match=r"a has no fake video of method 'flicker' \(its fake families: "
                                         r"demo/faceswap, demo/sbi, other/faceswap\)"):
        paired.one_family(pd.read_csv(fa), "flicker", "a")
