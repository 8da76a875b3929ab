"""MRL against the other detectors on the same test videos, and across groups of people: the comparisons the
``evaluate`` stage adds to ``metrics/evaluate.json``.

- :func:`paired_bootstrap`: the AUC difference of two detectors scored on the same videos, with a paired,
  label-stratified percentile bootstrap: each replicate draws, with replacement, as many fake videos from the
  fakes and as many real videos from the reals as there are (as :func:`~pipeline.scoring.metrics.bootstrap_auc`
  does, with the same draws for the same seed), and scores BOTH detectors on that one resample. The interval of
  the difference is therefore narrower than the two separate intervals suggest when the detectors rank the
  same videos alike, and ``p_above`` (the share of replicates where the first detector's AUC is higher) says
  how often it stays ahead.
- :func:`compare_with` pairs MRL's per-video scores with another detector's score file
  (``reports/baseline_scores.csv``, ``reports/peer_scores.csv``) by video key.
- :func:`group_aucs`: the test AUC per gender and per ethnicity group of a people file (``evaluate.groups``,
  columns ``identity,age,gender,ethnicity``), with :func:`~pipeline.scoring.metrics.bootstrap_auc`'s interval
  (over videos) where the group has at least ``min_people`` test people; a smaller group gets its counts and
  ``auc: null``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.errors import InputRefused
from pipeline.scoring.metrics import VIDEO_KEY, _arrays, _auc_rows, binary_metrics, bootstrap_auc, breakdown

__all__ = ["GROUP_COLUMNS", "PEOPLE_COLUMNS", "MIN_GROUP_PEOPLE", "ComparisonError", "paired_replicates",
           "paired_bootstrap", "read_scores", "compare_with", "video_identities", "read_people", "group_aucs",
           "comparisons", "detector_summary"]

PEOPLE_COLUMNS = ("identity", "age", "gender", "ethnicity")
GROUP_COLUMNS = ("gender", "ethnicity")
MIN_GROUP_PEOPLE = 5
SCORE_COLUMNS = list(VIDEO_KEY) + ["label", "score"]


class ComparisonError(InputRefused):
    """A score or people file that cannot be used; the message names the file (and the params key)."""


# --------------------------------------------------------------------------- paired bootstrap
def paired_replicates(labels, scores_a, scores_b, n: int = 1000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The AUCs of detectors ``a`` and ``b`` on ``n`` label-stratified resamples of the same videos, each
    resample used for both: ``(aucs_a [n], aucs_b [n])``. The draws are those of
    :func:`~pipeline.scoring.metrics.bootstrap_auc` for the same ``seed`` (the fakes' indices, then the reals',
    in the same blocks), so ``aucs_a`` are exactly its replicates of ``a``."""
    y, sa = _arrays(labels, scores_a)
    _, sb = _arrays(labels, scores_b)
    if sa.shape != sb.shape:
        raise ValueError(f"paired_replicates: {sa.size} scores of a but {sb.size} of b")
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if n <= 0 or pos.size == 0 or neg.size == 0:
        return np.zeros(0), np.zeros(0)
    rng = np.random.default_rng(seed)
    yb = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    out_a, out_b = np.empty(n), np.empty(n)
    block = max(1, min(n, 4_000_000 // y.size))  # as bootstrap_auc, so the draws are the same
    for lo in range(0, n, block):
        b = min(block, n - lo)
        idx = np.concatenate([pos[rng.integers(0, pos.size, (b, pos.size))],
                              neg[rng.integers(0, neg.size, (b, neg.size))]], axis=1)
        yy = np.broadcast_to(yb, idx.shape)
        out_a[lo:lo + b] = _auc_rows(yy, sa[idx])
        out_b[lo:lo + b] = _auc_rows(yy, sb[idx])
    return out_a, out_b


def paired_bootstrap(labels, scores_a, scores_b, n: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """``AUC(a) - AUC(b)`` on the same videos with its paired bootstrap interval.

    Returns ``diff`` (on all the videos), ``ci = [low, high]`` (percentiles of the replicates' differences),
    ``p_above`` (share of replicates with ``AUC(a) > AUC(b)``), ``auc_a``, ``auc_b``, ``n`` (videos),
    ``n_bootstrap``; ``ci`` and ``p_above`` are None when ``n == 0``, everything is None when one class is
    missing (the AUC is undefined)."""
    y, sa = _arrays(labels, scores_a)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    ma, mb = binary_metrics(y, sa), binary_metrics(y, scores_b)
    out = {"diff": None, "ci": None, "p_above": None, "auc_a": ma["auc"], "auc_b": mb["auc"], "n": int(y.size),
           "n_bootstrap": int(n)}
    if ma["auc"] is None:
        return out
    out["diff"] = ma["auc"] - mb["auc"]
    aa, ab = paired_replicates(y, sa, scores_b, n, seed)
    if aa.size:
        alpha = (1.0 - ci) / 2.0
        out["ci"] = [float(v) for v in np.quantile(aa - ab, [alpha, 1.0 - alpha])]
        out["p_above"] = float(np.mean(aa > ab))  # equal rank sums give equal floats: a tie is not "above"
    return out


def read_scores(path: str | Path, stage: str = "") -> pd.DataFrame:
    """A per-video score file (``dataset, method, video_id, label, score``, more columns allowed), written by
    the DVC stage ``stage`` (named in the error when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        by = f"the {stage} stage" if stage else "the stage that writes it"
        raise ComparisonError(f"{path} not found: run {by} first (`dvc repro` runs it before evaluate)")
    df = pd.read_csv(path, dtype={k: str for k in VIDEO_KEY})
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ComparisonError(f"{path}: missing column(s) {missing}; have {list(df.columns)}")
    if df.duplicated(list(VIDEO_KEY)).any():
        raise ComparisonError(f"{path}: a video is listed twice: {df[df.duplicated(list(VIDEO_KEY))].iloc[0].tolist()}")
    return df


def compare_with(videos: pd.DataFrame, other: pd.DataFrame, path: str | Path, n: int = 1000, ci: float = 0.95,
                 seed: int = 0) -> dict:
    """:func:`paired_bootstrap` of MRL (``videos``: one row per test video with ``score``) against another
    detector's per-video scores ``other`` (:func:`read_scores` of ``path``), on the videos both scored (``n`` of
    them; ``note`` says how many of MRL's had no score there).
    Keys: ``diff, ci, p_above, auc_mrl, auc_other, n, n_bootstrap, file, note``."""
    m = videos[SCORE_COLUMNS].merge(other[SCORE_COLUMNS], on=list(VIDEO_KEY), how="inner", suffixes=("", "_other"))
    bad = m[m["label"].astype(int) != m["label_other"].astype(int)]
    if len(bad):
        raise ComparisonError(f"{path}: video {bad.iloc[0][list(VIDEO_KEY)].tolist()} has another label there")
    res = paired_bootstrap(m["label"], m["score"], m["score_other"], n, ci, seed) if len(m) else \
        {"diff": None, "ci": None, "p_above": None, "auc_a": None, "auc_b": None, "n": 0, "n_bootstrap": int(n)}
    out = {"diff": res["diff"], "ci": res["ci"], "p_above": res["p_above"], "auc_mrl": res["auc_a"],
           "auc_other": res["auc_b"], "n": res["n"], "n_bootstrap": res["n_bootstrap"], "file": str(path),
           "note": None}
    missing = len(videos) - len(m)
    if missing:
        out["note"] = f"{missing} of MRL's {len(videos)} test videos have no score in {path}; compared on the other {len(m)}"
    return out


def detector_summary(videos: pd.DataFrame, identities: Optional[pd.DataFrame] = None, n: int = 1000,
                 ci: float = 0.95, seed: int = 0) -> dict:
    """The test metrics every detector reports alike (``metrics/baseline.json``, ``metrics/peer.json``):
    ``test`` (``auc, auc_ci_low, auc_ci_high, n, n_fake, n_real, n_people``), ``test_per_method`` (each fake
    family against all the reals of its dataset: AUC) and ``test_per_method_ci`` (its bootstrap interval).
    ``videos``: one row per test video (key, ``label``, ``score``); ``identities``
    (:func:`video_identities`) gives ``n_people`` (None without it)."""
    y, s = _arrays(videos["label"], videos["score"])
    m = binary_metrics(y, s)
    lo, hi = bootstrap_auc(y, s, n, ci, seed) if n else (None, None)
    people = None
    if identities is not None:
        ids = videos[list(VIDEO_KEY)].merge(identities, on=list(VIDEO_KEY), how="left")["identity"]
        people = int(ids.replace("", np.nan).dropna().nunique())
    per = breakdown(videos, "method", n_bootstrap=n, ci=ci, seed=seed) if len(videos) else {}
    return {"test": {"auc": m["auc"], "auc_ci_low": lo, "auc_ci_high": hi, "n": m["n"], "n_fake": m["n_pos"],
                     "n_real": m["n_neg"], "n_people": people},
            "test_per_method": {k: v["auc"] for k, v in per.items()},
            "test_per_method_ci": {k: v.get("auc_ci") for k, v in per.items()}}


# --------------------------------------------------------------------------- groups of people
def video_identities(crop_dir: str | Path) -> pd.DataFrame:
    """``dataset, method, video_id, identity`` of every video with windows, from ``<crop_dir>/index.csv``."""
    index = Path(crop_dir) / "index.csv"
    if not index.is_file():
        raise ComparisonError(f"{index} not found: run the crop stage")
    df = pd.read_csv(index, dtype=str, keep_default_na=False)
    return df[list(VIDEO_KEY) + ["identity"]].drop_duplicates(list(VIDEO_KEY)).reset_index(drop=True)


def read_people(path: str | Path, key: str = "evaluate.groups") -> pd.DataFrame:
    """The people file named by params key ``key``: one row per person, columns :data:`PEOPLE_COLUMNS`
    (more allowed); identities as in the split files. A blank group value reads as ``unknown``."""
    path = Path(path)
    if not path.is_file():
        raise ComparisonError(f"{key}: {path} not found; point {key} at a CSV with columns "
                              f"{','.join(PEOPLE_COLUMNS)} (the demo writes data/demo/people.csv), or set it to null")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PEOPLE_COLUMNS if c not in df.columns]
    if missing:
        raise ComparisonError(f"{key}: {path} lacks column(s) {missing} (has {list(df.columns)}); "
                              f"needs {','.join(PEOPLE_COLUMNS)}")
    df["identity"] = df["identity"].str.strip()
    dup = df[df["identity"].duplicated()]["identity"].tolist()
    if dup or (df["identity"] == "").any():
        raise ComparisonError(f"{key}: {path} has " + (f"identity {dup[0]!r} twice" if dup else "an empty identity")
                              + "; one row per person")
    for c in GROUP_COLUMNS:
        df[c] = df[c].str.strip().replace("", "unknown")
    return df


def group_aucs(videos: pd.DataFrame, people: pd.DataFrame, n: int = 1000, ci: float = 0.95, seed: int = 0,
               min_people: int = MIN_GROUP_PEOPLE) -> dict:
    """Test AUC per group of :data:`GROUP_COLUMNS`. ``videos``: one row per test video with ``label``,
    ``score`` and ``identity`` (a fake video's identity is its target person's, as in the split files).

    Returns ``{column: {value: {auc, auc_ci, n_people, n_videos, n_fake, n_real, note}}, "unlisted":
    {n_people, n_videos}, "min_people": min_people}``; ``auc`` and ``auc_ci`` are None (with a note) for a
    group of fewer than ``min_people`` test people or with one class only. The interval is the stratified
    bootstrap over the group's videos."""
    listed = videos.merge(people[["identity", *GROUP_COLUMNS]], on="identity", how="inner")
    unlisted = videos[~videos["identity"].isin(people["identity"])]
    out: dict = {"min_people": int(min_people)}
    for col in GROUP_COLUMNS:
        groups = {}
        for value, g in listed.groupby(col, sort=True):
            y, s = g["label"].astype(int).to_numpy(), g["score"].astype(float).to_numpy()
            entry = {"auc": None, "auc_ci": None, "n_people": int(g["identity"].nunique()), "n_videos": int(len(g)),
                     "n_fake": int(y.sum()), "n_real": int(len(y) - y.sum()), "note": None}
            if entry["n_people"] < min_people:
                entry["note"] = f"fewer than {min_people} test people"
            else:
                m = binary_metrics(y, s)
                entry["auc"], entry["note"] = m["auc"], m["note"]
                if m["auc"] is not None and n > 0:
                    entry["auc_ci"] = list(bootstrap_auc(y, s, n, ci, seed))
            groups[str(value)] = entry
        out[col] = groups
    out["unlisted"] = {"n_people": int(unlisted["identity"].nunique()), "n_videos": int(len(unlisted))}
    return out


# --------------------------------------------------------------------------- what evaluate adds
def comparisons(videos: pd.DataFrame, others: dict[str, Path], crop_dir: str | Path,
                people: Optional[pd.DataFrame] = None, people_file: Optional[str] = None,
                n: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """What ``evaluate`` adds to its metrics: ``vs_<name>`` (:func:`compare_with`) for each ``name -> score
    file`` of ``others`` and, given ``people`` (:func:`read_people` of the ``evaluate.groups`` file
    ``people_file``), ``groups`` (:func:`group_aucs`, identities from ``crop_dir``'s index)."""
    out: dict = {f"vs_{name}": compare_with(videos, read_scores(path, name), path, n, ci, seed)
                 for name, path in others.items()}
    if people is not None:
        vids = videos.merge(video_identities(crop_dir), on=list(VIDEO_KEY), how="left")
        vids["identity"] = vids["identity"].fillna("")
        out["groups"] = {"file": str(people_file), **group_aucs(vids, people, n, ci, seed)}
    return out
