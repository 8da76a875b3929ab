"""Is a fake family detectable from the mouth's motion alone? A one-number diagnostic on the crop stage's files.

Why: on the demo every detector (MRL, the hand-made baseline, MesoNet) scores ``mouth_reenact`` near chance.
This script asks whether the crops carry the manipulation at all. Per window, a box around the mouth (centred
between the two mouth-corner landmarks the crop stage stores, sized by their distance) gives one brightness
value per frame; the statistic is the standard deviation over time of its frame-to-frame change (a mouth
opening and closing at speech rates changes it much more than one expression change or a head turn). A video's
value is the mean over its windows; its AUC against the real videos of the same split comes with the same
stratified bootstrap interval as ``evaluate``.

It is a diagnostic of the data, not a detector of the project: it uses no training and is aimed at one family.

    python scripts/mouth_motion.py                       # data/crops, test split, mouth_reenact
    python scripts/mouth_motion.py --split val --method sbi
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.scoring.metrics import binary_metrics, bootstrap_auc  # noqa: E402

__all__ = ["mouth_series", "mouth_motion", "video_values", "main"]


def mouth_series(clip: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Mean grey level per frame of a box around the mouth: ``clip`` uint8 ``[F, S, S, 3]``, ``landmarks``
    ``[F, 5, 2]`` in crop pixels (x, y; points 3 and 4 are the mouth corners). The box is centred between the
    corners, 1.2 x their distance wide and 0.7 x tall, clipped to the crop."""
    grey = clip.astype(np.float64).mean(-1)
    size = grey.shape[1]
    out = np.empty(len(grey))
    for t, (frame, lm) in enumerate(zip(grey, landmarks)):
        cx, cy = lm[3:5].mean(0)
        span = float(np.linalg.norm(lm[4] - lm[3]))
        half_w, half_h = max(2.0, 0.6 * span), max(1.5, 0.35 * span)
        x0, x1 = int(np.clip(round(cx - half_w), 0, size - 1)), int(np.clip(round(cx + half_w), 1, size))
        y0, y1 = int(np.clip(round(cy - half_h), 0, size - 1)), int(np.clip(round(cy + half_h), 1, size))
        out[t] = frame[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)].mean()
    return out


def mouth_motion(clip: np.ndarray, landmarks: np.ndarray) -> float:
    """Standard deviation over time of the frame-to-frame change of :func:`mouth_series` (grey levels)."""
    return float(np.diff(mouth_series(clip, landmarks)).std())


def video_values(crops: Path, split: str, method: str) -> pd.DataFrame:
    """One row per video of ``split`` that is real or of ``method``: ``video_id``, ``label``, ``value``."""
    index = crops / "index.csv"
    if not index.exists():
        raise SystemExit(f"mouth_motion: {index} is not there; run the crop stage (dvc repro crop) first")
    df = pd.read_csv(index)
    df = df[(df.split == split) & ((df.label == 0) | (df.method == method))]
    if not (df.label == 1).any():
        known = ", ".join(sorted(set(pd.read_csv(index).method) - {"real"}))
        raise SystemExit(f"mouth_motion: no {method!r} videos in the {split} split of {index}; families: {known}")
    rows = []
    for (video, label, file), group in df.groupby(["video_id", "label", "file"], sort=True):
        with h5py.File(crops / file, "r") as f:
            clips, lms = f["clips"], f["landmarks"]
            vals = [mouth_motion(clips[w], lms[w]) for w in sorted(group.window)]
        rows.append({"video_id": video, "label": int(label), "value": float(np.mean(vals))})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=Path, default=Path("data/crops"), help="the crop stage's folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--method", default="mouth_reenact", help="the fake family scored against the real videos")
    ap.add_argument("--bootstrap", type=int, default=1000)
    a = ap.parse_args(argv)
    v = video_values(a.crops, a.split, a.method)
    auc = binary_metrics(v.label, v.value)["auc"]
    low, high = bootstrap_auc(v.label, v.value, n=a.bootstrap)
    print(f"mouth_motion: {a.method} against real, {a.split} split: AUC {auc:.3f} [{low:.3f}, {high:.3f}] on "
          f"{int(v.label.sum())} fake + {int((v.label == 0).sum())} real videos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
