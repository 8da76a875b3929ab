"""A hand-made-features baseline on the same crops and splits as the model: the floor any run must beat.

Twelve features per crop window, each a plain image statistic of the kind a forensic analyst would try
first (``c`` = the central half of the crop, mostly face; ``b`` = the outer border, mostly background;
``r`` = the ring between them, where a blended face meets its surroundings):

==  =====================================================================
 1  mean red   of c minus b          colour mismatch of a pasted face
 2  mean green of c minus b
 3  mean blue  of c minus b
 4  mean |frame difference| in c     motion / temporal noise of the face
 5  mean |frame difference| in b
 6  4 / 5                            face moves differently from its surroundings
 7  std over frames of c's mean brightness            flicker
 8  mean |Laplacian| in c            high-frequency energy (blur, resampling)
 9  mean |Laplacian| in b
10  8 / 9
11  mean gradient magnitude in r     blending boundary
12  std over frames of (c - b) mean brightness        face/background flicker
==  =====================================================================

A standardised logistic regression (scikit-learn) is fitted on the training windows; a video's score is
the mean over its windows, exactly as for the model; validation and test video AUCs come with the same
bootstrap intervals as ``evaluate``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.ingest.clips import ClipDataset
from pipeline.scoring.paired import detector_summary, video_identities
from pipeline.scoring.metrics import binary_metrics, bootstrap_auc, breakdown, video_scores

__all__ = ["FEATURES", "window_features", "crop_features", "fit_baseline", "baseline_report"]

FEATURES = ["red_c-b", "green_c-b", "blue_c-b", "tdiff_c", "tdiff_b", "tdiff_ratio", "flicker_c",
            "lap_c", "lap_b", "lap_ratio", "grad_ring", "flicker_c-b"]
_EPS = 1e-6


def _regions(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:s, :s]
    d = np.maximum(np.abs(yy - (s - 1) / 2), np.abs(xx - (s - 1) / 2)) / (s / 2)  # 0 centre .. 1 edge
    return d < 0.5, d >= 0.8, (d >= 0.4) & (d < 0.65)


def window_features(clip: np.ndarray) -> np.ndarray:
    """The 12 features (see the module docstring) of one window, uint8 ``[F, S, S, 3]``."""
    x = clip.astype(np.float32) / 255.0
    c, b, r = _regions(x.shape[1])
    gray = x.mean(-1)                                                   # [F, S, S]
    col_c, col_b = x[:, c].mean((0, 1)), x[:, b].mean((0, 1))           # [3]
    td = np.abs(np.diff(gray, axis=0)) if len(gray) > 1 else np.zeros_like(gray[:1])
    td_c, td_b = td[:, c].mean(), td[:, b].mean()
    lap = np.abs(4 * gray[:, 1:-1, 1:-1] - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1]
                 - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:])
    lap_c, lap_b = lap[:, c[1:-1, 1:-1]].mean(), lap[:, b[1:-1, 1:-1]].mean()
    gy, gx = np.gradient(gray, axis=(1, 2))
    grad_r = np.sqrt(gx ** 2 + gy ** 2)[:, r].mean()
    mc, mb = gray[:, c].mean(1), gray[:, b].mean(1)                     # per frame
    return np.array([*(col_c - col_b), td_c, td_b, td_c / (td_b + _EPS), mc.std(), lap_c, lap_b,
                     lap_c / (lap_b + _EPS), grad_r, (mc - mb).std()], dtype=np.float64)


def crop_features(crop_dir: str | Path) -> pd.DataFrame:
    """One row per crop window: keys, label, split and the 12 features."""
    ds = ClipDataset(crop_dir)
    rows = []
    for i in range(len(ds)):
        item = ds[i]
        rows.append({"dataset": item["dataset"], "method": item["method"], "video_id": item["video_id"],
                     "window": item["window"], "label": item["label"], "split": ds.index.iloc[i]["split"],
                     **dict(zip(FEATURES, window_features(item["clip"].numpy())))})
    ds.close()
    return pd.DataFrame(rows)


def fit_baseline(table: pd.DataFrame, seed: int = 0, bootstrap: int = 1000, ci: float = 0.95,
                 videos_out: Optional[dict] = None) -> dict:
    """Fit on the train windows; video-level metrics (AUC with its bootstrap interval) on val and test.
    ``videos_out``: a dict that receives each split's per-video scores (:func:`video_scores`)."""
    train = table[table.split == "train"]
    if train.label.nunique() < 2:
        raise ValueError("baseline: the training split needs real and fake windows")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    model.fit(train[FEATURES].to_numpy(), train.label.to_numpy())
    out: dict = {"model": {"features": FEATURES,   # nested: the metrics file's top level is the results
                           "coefficients": dict(zip(FEATURES, model[-1].coef_[0].round(4).tolist()))}}
    for split in ("train", "val", "test"):
        part = table[table.split == split]
        if part.empty:
            continue
        w = part.assign(prob=model.predict_proba(part[FEATURES].to_numpy())[:, 1])
        vids = video_scores(w)
        if videos_out is not None:
            videos_out[split] = vids
        y, s = vids["label"].to_numpy(), vids["score"].to_numpy()
        m = binary_metrics(y, s)
        lo, hi = bootstrap_auc(y, s, bootstrap, ci, seed) if bootstrap and split != "train" else (None, None)
        out[split] = {"auc": m["auc"], "auc_ci_low": lo, "auc_ci_high": hi, "n": int(len(vids))}
        if split == "test":
            out["test_per_method"] = {k: v.get("auc") for k, v in breakdown(vids, "method").items()}
    return out


def baseline_report(crop_dir: str | Path, seed: int = 0, bootstrap: int = 1000,
                    ci: float = 0.95) -> tuple[dict, pd.DataFrame]:
    """:func:`fit_baseline` on the crops of ``crop_dir``, its test block completed as every detector reports it
    (:func:`~pipeline.scoring.paired.detector_summary`: counts of fakes, reals and people, each family's
    interval), and the test videos' scores (dataset, method, video_id, label, score, n_windows, split; empty
    when there is no test split), which ``evaluate`` pairs with MRL's."""
    vids: dict = {}
    res = fit_baseline(crop_features(crop_dir), seed, bootstrap, ci, videos_out=vids)
    test = vids.get("test")
    if test is None:
        return res, pd.DataFrame(columns=["dataset", "method", "video_id", "label", "score", "n_windows", "split"])
    summary = detector_summary(test, video_identities(crop_dir), bootstrap, ci, seed)
    res["test"].update({k: summary["test"][k] for k in ("n_fake", "n_real", "n_people")})
    res["test_per_method_ci"] = summary["test_per_method_ci"]
    return res, test
