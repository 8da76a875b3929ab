"""Video-level detection metrics for the ``evaluate`` stage (pure functions, no I/O except
:func:`save_roc_png`).

The rules (``shared/paper-notes.md``, "Evaluation mistakes the field keeps making"):

- a video's score is the MEAN of the fake probabilities of all its windows, and a video is
  keyed by (dataset, method, video_id): two videos with the same id under two manipulation
  methods, or in two datasets, are two videos (:func:`video_scores`);
- AUC/AP/EER are computed over videos, never over windows;
- the decision threshold is chosen on validation (:func:`threshold_at_eer`), never on test;
- AUC comes with a bootstrap interval over videos (:func:`bootstrap_auc`).

Convention everywhere: label 1 = fake = positive class, a higher score means more likely
fake, and a video is predicted fake when ``score >= threshold`` (the convention of
:func:`sklearn.metrics.roc_curve`, so a threshold read off the ROC reproduces its point).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve

from pipeline.runtime import atomic_write

__all__ = ["VIDEO_KEY", "video_scores", "binary_metrics", "equal_error_rate", "threshold_at_eer",
           "bootstrap_auc", "breakdown", "roc_points", "save_roc_png", "video_metrics"]

#: A video's key (same columns as ``pipeline.ingest.datasets.VIDEO_KEY_COLUMNS``; kept here so the
#: metrics stay importable without the dataset adapters).
VIDEO_KEY = ("dataset", "method", "video_id")

SINGLE_CLASS_NOTE = "only one class present ({}): AUC, AP and EER are undefined"


# --------------------------------------------------------------------------- aggregation
def video_scores(window_df: pd.DataFrame, score_col: str = "prob") -> pd.DataFrame:
    """Aggregate window probabilities to one score per video.

    Args:
        window_df: one row per window with columns dataset, method, video_id, label and
            ``score_col`` (fake probability); an optional ``split`` column is carried over.
        score_col: name of the probability column.

    Returns:
        One row per (dataset, method, video_id), sorted by it, with columns dataset, method,
        video_id, label, score (mean over ALL the video's windows), n_windows [, split].

    Raises:
        ValueError: missing columns, a NaN score, or a video whose windows disagree on
            label or split (the key is then not identifying one video).
    """
    need = list(VIDEO_KEY) + ["label", score_col]
    missing = [c for c in need if c not in window_df.columns]
    if missing:
        raise ValueError(f"video_scores: missing column(s) {missing}; have {list(window_df.columns)}")
    if window_df[score_col].isna().any():
        raise ValueError(f"video_scores: {int(window_df[score_col].isna().sum())} window score(s) are NaN")
    if window_df[list(VIDEO_KEY)].isna().any().any():
        raise ValueError("video_scores: empty dataset/method/video_id in some rows")
    extra = ["split"] if "split" in window_df.columns else []
    g = window_df.groupby(list(VIDEO_KEY), sort=True, dropna=False)
    out = g.agg(score=(score_col, "mean"), n_windows=(score_col, "size"),
                label=("label", "first"), _labels=("label", "nunique"),
                **{c: (c, "first") for c in extra}, **{f"_{c}s": (c, "nunique") for c in extra})
    for c in ["label"] + extra:
        bad = out[out[f"_{c}s"] > 1]
        if len(bad):
            raise ValueError(f"video_scores: windows of video(s) {list(bad.index[:5])} disagree on {c}")
    out = out.reset_index()
    out["label"] = out["label"].astype(int)
    out["score"] = out["score"].astype(float)
    return out[list(VIDEO_KEY) + ["label", "score", "n_windows"] + extra]


# --------------------------------------------------------------------------- metrics
def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(int).reshape(-1)
    s = np.asarray(scores, dtype=float).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()))}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return y, s


def equal_error_rate(labels, scores) -> tuple[float, float]:
    """``(eer, threshold)``: the rate where false-positive rate = false-negative rate.

    The ROC is taken with all its vertices (``drop_intermediate=False``) and joined by straight
    lines, as :func:`roc_auc_score` does; the EER is where that line crosses FPR = FNR, and the
    threshold is the one of the ROC vertex nearest to the crossing (the highest such threshold
    on a tie). Needs both classes.
    """
    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        raise ValueError(SINGLE_CLASS_NOTE.format(_class_desc(y)))
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    d = fpr - fnr  # goes from -1 (fpr 0, fnr 1) up to +1, never decreasing
    i = int(np.argmax(d >= 0))
    if d[i] == 0 or i == 0:
        eer = float(fpr[i])
    else:  # cross between vertices i-1 and i
        t = -d[i - 1] / (d[i] - d[i - 1])
        eer = float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    j = int(np.argmin(np.abs(d)))
    th = float(thr[j]) if np.isfinite(thr[j]) else float(np.max(s))
    return eer, th


def threshold_at_eer(labels, scores) -> float:
    """Decision threshold at the EER point; pick it on VALIDATION videos, then apply it to test.

    Raises ValueError when the labels have one class only (no threshold can be chosen: set
    ``evaluate.threshold`` explicitly)."""
    y, _ = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        raise ValueError("threshold_at_eer: " + SINGLE_CLASS_NOTE.format(_class_desc(y))
                         + "; cannot choose a threshold, set evaluate.threshold")
    return equal_error_rate(labels, scores)[1]


def _class_desc(y: np.ndarray) -> str:
    if y.size == 0:
        return "no videos"
    return "all fake" if y[0] == 1 else "all real"


def binary_metrics(labels, scores, threshold: float = 0.5) -> dict:
    """Metrics of one set of videos.

    Returns a dict with ``auc`` (ROC AUC), ``ap`` (average precision, fake = positive),
    ``eer`` and ``eer_threshold`` (:func:`equal_error_rate`), ``acc`` (accuracy of
    ``score >= threshold``), ``threshold``, ``n``, ``n_pos`` (fake), ``n_neg`` (real), and
    ``note``. When only one class is present (e.g. a real-only subset), auc/ap/eer/eer_threshold
    are None and ``note`` says why; an empty set also has acc None.
    """
    y, s = _arrays(labels, scores)
    n_pos = int(y.sum())
    out = {"auc": None, "acc": None, "eer": None, "eer_threshold": None, "ap": None,
           "threshold": float(threshold), "n": int(y.size), "n_pos": n_pos, "n_neg": int(y.size - n_pos),
           "note": None}
    if y.size:
        out["acc"] = float(accuracy_score(y, (s >= threshold).astype(int)))
    if 0 < n_pos < y.size:
        out["auc"] = float(roc_auc_score(y, s))
        out["ap"] = float(average_precision_score(y, s))
        out["eer"], out["eer_threshold"] = equal_error_rate(y, s)
    else:
        out["note"] = SINGLE_CLASS_NOTE.format(_class_desc(y))
    return out


def _auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC of each row of ``s`` [B, n] against labels ``y`` [B, n] (Mann-Whitney U with
    average ranks for ties; equals ``roc_auc_score``)."""
    r = rankdata(s, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    return ((r * y).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def bootstrap_auc(labels, scores, n: int = 1000, ci: float = 0.95,
                  seed: int = 0) -> tuple[Optional[float], Optional[float]]:
    """Percentile bootstrap interval of the video-level AUC.

    Each of ``n`` replicates draws, with replacement, as many fake videos from the fakes and
    as many real videos from the reals as there are (stratified, so every replicate has both
    classes and the class balance of the data). Deterministic for a given ``seed``.

    Returns ``(low, high)`` at the ``(1-ci)/2`` and ``(1+ci)/2`` percentiles, or
    ``(None, None)`` when ``n == 0`` or only one class is present.
    """
    y, s = _arrays(labels, scores)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    pos, neg = s[y == 1], s[y == 0]
    if n <= 0 or pos.size == 0 or neg.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    yb = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    aucs = np.empty(n)
    block = max(1, min(n, 4_000_000 // y.size))  # bound the memory of one vectorised block
    for lo in range(0, n, block):
        b = min(block, n - lo)
        sb = np.concatenate([pos[rng.integers(0, pos.size, (b, pos.size))],
                             neg[rng.integers(0, neg.size, (b, neg.size))]], axis=1)
        aucs[lo:lo + b] = _auc_rows(np.broadcast_to(yb, sb.shape), sb)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(low), float(high)


# --------------------------------------------------------------------------- breakdowns
def breakdown(video_df: pd.DataFrame, by: str, threshold: float = 0.5, n_bootstrap: int = 0,
              ci: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Metrics per method or per dataset, from :func:`video_scores` output.

    ``by="method"``: one entry ``"<dataset>/<method>"`` per FAKE method (a method with fake
    videos), scored on that method's fake videos against ALL real videos of the same dataset
    (the FF++ convention: each manipulation vs the shared originals; real videos of other
    datasets are never mixed in). Real-only methods get no entry.
    ``by="dataset"``: one entry per dataset with all its videos.

    Each entry is :func:`binary_metrics` at ``threshold``; with ``n_bootstrap > 0`` it also
    has ``auc_ci = [low, high]`` (:func:`bootstrap_auc`).
    """
    need = list(VIDEO_KEY) + ["label", "score"]
    missing = [c for c in need if c not in video_df.columns]
    if missing:
        raise ValueError(f"breakdown: missing column(s) {missing}")
    groups: dict[str, pd.DataFrame] = {}
    if by == "dataset":
        for name, g in video_df.groupby("dataset", sort=True):
            groups[str(name)] = g
    elif by == "method":
        for dataset, d in video_df.groupby("dataset", sort=True):
            real = d[d["label"] == 0]
            fakes = d[d["label"] == 1]
            for method, f in fakes.groupby("method", sort=True):
                groups[f"{dataset}/{method}"] = pd.concat([real, f])
    else:
        raise ValueError(f"breakdown: by must be 'method' or 'dataset', got {by!r}")
    out = {}
    for name, g in groups.items():
        m = binary_metrics(g["label"], g["score"], threshold)
        if n_bootstrap > 0:
            m["auc_ci"] = list(bootstrap_auc(g["label"], g["score"], n_bootstrap, ci, seed))
        out[name] = m
    return out


# --------------------------------------------------------------------------- plots
def roc_points(labels, scores, drop_intermediate: bool = True) -> list[dict]:
    """ROC as rows ``{"fpr", "tpr", "threshold"}`` for a DVC plot (JSON). The first point's
    threshold (sklearn's +inf, "nothing predicted fake") is written as None, which JSON can
    hold. Returns [] when only one class is present."""
    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return []
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=drop_intermediate)
    return [{"fpr": float(f), "tpr": float(t), "threshold": float(h) if math.isfinite(h) else None}
            for f, t, h in zip(fpr, tpr, thr)]


def save_roc_png(curves: Mapping[str, tuple[Sequence, Sequence]], path: str | os.PathLike,
                 title: str = "ROC (video level)") -> Path:
    """Draw one ROC per entry ``name -> (labels, scores)`` (legend shows the AUC) and write a
    PNG atomically (temporary file beside ``path`` + ``os.replace``). Single-class entries are
    listed in the legend as undefined. Uses the Agg canvas directly: no display, no pyplot state.
    """
    # deferred: train_relation imports this module for its validation metrics and draws nothing (matplotlib's
    # import is about 0.4 s of the start-up of a masking experiment's stage)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    for name, (labels, scores) in curves.items():
        pts = roc_points(labels, scores, drop_intermediate=False)
        if not pts:
            ax.plot([], [], label=f"{name} (one class: undefined)")
            continue
        auc = roc_auc_score(*_arrays(labels, scores))
        ax.plot([p["fpr"] for p in pts], [p["tpr"] for p in pts], lw=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (real called fake)",
           ylabel="true positive rate (fake detected)", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return path


def video_metrics(windows: pd.DataFrame, threshold: float = 0.5, prefix: str = "val_") -> dict:
    """Video-level AUC/ACC/EER/AP of window predictions (a video's score = mean over its windows)."""
    vids = video_scores(windows)
    m = binary_metrics(vids["label"].to_numpy(), vids["score"].to_numpy(), threshold)
    return {f"{prefix}{k}": (float(v) if v is not None else float("nan"))
            for k, v in m.items() if k in ("auc", "acc", "eer", "ap")}
