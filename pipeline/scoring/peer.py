"""The published peer (MesoNet's Meso-4, :mod:`peer_models.mesonet`) scored on the same test videos as MRL and
the baseline: the library behind the ``peer`` stage. Frozen: nothing is trained here.

Meso-4 reads 256 px faces, while the crop stage keeps its windows at ``crop.image_size`` (64 px in the demo).
So the faces are cut again from the videos themselves, where the crop stage found them: each crop file keeps,
per window frame, the MTCNN face box (smoothed along the track, in frame pixels), the frame's index in the
video, and the video's path (``source``). Per test video, :func:`peer_faces` takes ``peer.frames`` evenly
spaced frames among those of its windows, decodes them, and cuts the square around the box with
``peer.margin`` border, resized to 256 px (no second face detection). The video's score is the mean of the
frames' fake scores (``1 - P(real)``), and its metrics are computed as for MRL and the baseline
(:func:`~pipeline.scoring.paired.detector_summary`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from peer_models.mesonet import INPUT_SIZE, Meso4, fake_scores
from pipeline.ingest.faces import square_crop
from pipeline.ingest.video import VideoError, iter_frames
from pipeline.scoring.metrics import VIDEO_KEY

__all__ = ["PeerError", "pick_frames", "peer_faces", "score_videos"]


class PeerError(RuntimeError):
    """A crop file or a video the peer cannot read; the message names it."""


def pick_frames(frame_index: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` evenly spaced frames (fewer when the windows hold fewer) among the distinct frames of a video's
    windows: ``(frame numbers [k], boxes [k, 4])``, in frame order. ``frame_index [W, F]``, ``boxes [W, F, 4]``
    as the crop files store them (a frame in two windows keeps its first box)."""
    fr = np.asarray(frame_index).reshape(-1)
    bx = np.asarray(boxes, np.float64).reshape(-1, 4)
    uniq, first = np.unique(fr, return_index=True)
    if uniq.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4))
    pick = np.unique(np.round(np.linspace(0, uniq.size - 1, min(k, uniq.size))).astype(int))
    return uniq[pick].astype(np.int64), bx[first[pick]]


def peer_faces(crop_file: str | Path, frames: int = 8, margin: float = 0.4,
               size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The faces the peer scores for one video: ``(faces uint8 [k, size, size, 3], frame numbers [k])``, cut
    from the video named in ``crop_file`` (see the module docstring)."""
    crop_file = Path(crop_file)
    try:
        with h5py.File(crop_file, "r") as f:
            source = str(f.attrs["source"])
            fidx = f["frame_index"][()] if "frame_index" in f else np.zeros((0, 0), np.int64)
            boxes = f["boxes"][()] if "boxes" in f else np.zeros((0, 0, 4), np.float32)
    except (OSError, KeyError) as exc:
        raise PeerError(f"{crop_file}: not a crop file with boxes, frame numbers and a source video ({exc})") from None
    want, bx = pick_frames(fidx, boxes, frames)
    if want.size == 0:
        return np.zeros((0, size, size, 3), np.uint8), want
    if not Path(source).is_file():
        raise PeerError(f"{source} (the video of {crop_file}) not found: the peer cuts its 256 px faces from the "
                        f"videos the crop stage read; run it where they are")
    boxes_at = dict(zip(want.tolist(), bx))
    faces: dict[int, np.ndarray] = {}
    try:
        for i, frame in enumerate(iter_frames(source, max_frames=int(want.max()) + 1)):
            if i in boxes_at:
                faces[i] = square_crop(frame, boxes_at[i], margin, size)
    except VideoError as exc:
        raise PeerError(f"{source} (the video of {crop_file}): {exc}") from None
    if len(faces) < want.size:
        raise PeerError(f"{source}: decoding stopped before frame {int(want.max())}, which the crop stage read; "
                        f"the video changed since it was cropped (re-run the crop stage)")
    return np.stack([faces[i] for i in want.tolist()]), want


def score_videos(crop_dir: str | Path, model: Meso4, split: str = "test", frames: int = 8, margin: float = 0.4,
                 progress: bool = True) -> pd.DataFrame:
    """One row per video of ``split`` in the crop index: dataset, method, video_id, label, split, identity,
    score (mean fake score of its faces), n_frames. Sorted by the video key, as
    :func:`~pipeline.scoring.metrics.video_scores` sorts MRL's."""
    index_csv = Path(crop_dir) / "index.csv"
    if not index_csv.is_file():
        raise PeerError(f"{index_csv}: crop index not found (run the crop stage)")
    idx = pd.read_csv(index_csv, dtype=str, keep_default_na=False)
    vids = (idx[idx["split"] == split].drop_duplicates(list(VIDEO_KEY))
            .sort_values(list(VIDEO_KEY), kind="stable").reset_index(drop=True))
    rows = []
    for r in tqdm(vids.itertuples(index=False), total=len(vids), desc=f"peer ({split})", unit="video",
                  disable=not progress, file=sys.stderr):
        faces, got = peer_faces(Path(crop_dir) / r.file, frames, margin)
        if got.size == 0:
            continue
        rows.append({"dataset": r.dataset, "method": r.method, "video_id": r.video_id, "label": int(r.label),
                     "split": r.split, "identity": r.identity, "score": float(np.mean(fake_scores(model, faces))),
                     "n_frames": int(got.size)})
    cols = list(VIDEO_KEY) + ["label", "split", "identity", "score", "n_frames"]
    return pd.DataFrame(rows, columns=cols)
