"""Is a fake family detectable from the mouth's motion alone? A one-number diagnostic on the crop stage's files.

Why: on the demo every detector (MRL, the hand-made baseline, MesoNet) scores ``mouth_reenact`` near chance.
This script asks whether the crops carry the manipulation at all. Per window, a box around the mouth (centred
between the two mouth-corner landmarks the crop stage stores, sized by their distance) gives one brightness
value per frame; the statistic is the standard deviation over time of its frame-to-frame change (a mouth
opening and closing at speech rates changes it much more than one expression change or a head turn). A video's
value is the mean over its windows; its AUC against the real videos of the same split comes with the same
stratified bootstrap interval as ``evaluate``.

It is a diagnostic of the data, not a detector of the project: it uses no training and is aimed at one family.

``--features K`` asks the same of what the encoder starts from: the first K modules of the ImageNet MobileNetV2
(frozen, per frame; the encoder's backbone is K = 14), the feature vector at the map cell under the mouth centre,
and the mean over time of its frame-to-frame change relative to its mean norm (:func:`feature_motion`).

    python scripts/mouth_motion.py                       # data/crops, test split, mouth_reenact
    python scripts/mouth_motion.py --split val --method sbi
    python scripts/mouth_motion.py --features 14         # the backbone's own features at the mouth
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

__all__ = ["mouth_series", "mouth_motion", "mouth_cell", "feature_motion", "video_values", "main"]


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


def mouth_cell(landmarks: np.ndarray, size: int, cells: int) -> np.ndarray:
    """``[F, 2]`` (row, column) of the cell of a ``cells`` x ``cells`` map over a ``size`` px crop under the point
    between the two mouth corners of each frame's ``landmarks`` ``[F, 5, 2]`` (x, y)."""
    centre = landmarks[:, 3:5].mean(1)
    return np.clip((centre * cells / size).astype(int), 0, cells - 1)[:, ::-1]


def feature_motion(clip: np.ndarray, landmarks: np.ndarray, modules) -> float:
    """How much the features at the mouth change from frame to frame: ``modules`` (e.g. the first K modules of
    MobileNetV2's ``features``) run on every frame of ``clip`` uint8 ``[F, S, S, 3]`` (ImageNet-normalised),
    ``v_t`` the feature vector at :func:`mouth_cell`; returns ``mean_t ||v_{t+1} - v_t|| / mean_t ||v_t||``
    (0 for a still clip)."""
    import torch
    from graph_models.backbones import IMAGENET_MEAN, IMAGENET_STD
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(np.ascontiguousarray(clip)).float().permute(0, 3, 1, 2) / 255 - mean) / std
    with torch.no_grad():
        f = modules(x)
    ij = mouth_cell(landmarks, clip.shape[1], f.shape[-1])
    v = f[torch.arange(len(f)), :, torch.from_numpy(ij[:, 0].copy()), torch.from_numpy(ij[:, 1].copy())]
    scale = float(v.norm(dim=1).mean())
    return float((v[1:] - v[:-1]).norm(dim=1).mean()) / scale if scale > 0 else 0.0


def video_values(crops: Path, split: str, method: str, statistic=mouth_motion) -> pd.DataFrame:
    """One row per video of ``split`` that is real or of ``method``: ``video_id``, ``label``, ``value`` (the mean of
    ``statistic(clip, landmarks)`` over its windows)."""
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
            vals = [statistic(clips[w], lms[w]) for w in sorted(group.window)]
        rows.append({"video_id": video, "label": int(label), "value": float(np.mean(vals))})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=Path, default=Path("data/crops"), help="the crop stage's folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--method", default="mouth_reenact", help="the fake family scored against the real videos")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--features", type=int, default=0, metavar="K",
                    help="1-14: the change of ImageNet MobileNetV2's features (its first K modules) at the mouth "
                         "instead of the grey level (0)")
    a = ap.parse_args(argv)
    statistic, what = mouth_motion, "grey level"
    if a.features:
        if not 1 <= a.features <= 14:
            raise SystemExit(f"mouth_motion: --features {a.features}: give 1 to 14 (the encoder's backbone keeps 14 "
                             f"modules of MobileNetV2's features)")
        import torch
        from graph_models.backbones import MobileNetV2Backbone
        modules = MobileNetV2Backbone("auto").features[:a.features].eval()
        torch.set_num_threads(1)
        statistic, what = (lambda c, lm: feature_motion(c, lm, modules)), f"ImageNet MobileNetV2 features[:{a.features}]"
    v = video_values(a.crops, a.split, a.method, statistic)
    auc = binary_metrics(v.label, v.value)["auc"]
    low, high = bootstrap_auc(v.label, v.value, n=a.bootstrap)
    print(f"mouth_motion ({what}): {a.method} against real, {a.split} split: AUC {auc:.3f} [{low:.3f}, {high:.3f}] on "
          f"{int(v.label.sum())} fake + {int((v.label == 0).sum())} real videos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
