"""Offline test media for the benchmarks: short videos of a real face made from a picture that ships with
matplotlib (``mpl-data/sample_data/grace_hopper.jpg``, public domain), so no benchmark downloads anything.

:func:`face_video` pastes the portrait onto a plain background and moves/zooms it smoothly over the frames
(a different path per ``seed``), then encodes the frames with libx264 (PyAV), like a short talking-head clip.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from pipeline.ingest.video import write_video

__all__ = ["portrait", "face_frames", "face_video"]


def portrait() -> np.ndarray:
    """The RGB portrait (512 x 600) bundled with matplotlib."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def face_frames(frames: int, width: int = 640, height: int = 360, seed: int = 0) -> list[np.ndarray]:
    """``frames`` RGB uint8 frames [height, width, 3] showing the portrait moving and zooming slowly."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(portrait())
    bg = rng.integers(40, 200, 3).astype(np.uint8)
    phase = rng.uniform(0, 2 * np.pi, 3)
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        side = int(height * (0.8 + 0.1 * np.sin(2 * np.pi * t + phase[0])))
        face = np.asarray(img.resize((side * img.width // img.height, side), Image.BILINEAR))
        canvas = np.empty((height, width, 3), np.uint8)
        canvas[:] = bg
        fw = min(face.shape[1], width)
        x = int((width - fw) * (0.5 + 0.4 * np.sin(2 * np.pi * t + phase[1])))
        y = int((height - side) * (0.5 + 0.5 * np.sin(2 * np.pi * t + phase[2]))) if height > side else 0
        h = min(side, height - y)
        canvas[y:y + h, x:x + fw] = face[:h, :fw]
        out.append(canvas)
    return out


def face_video(path: str | Path, frames: int = 60, width: int = 640, height: int = 360, seed: int = 0,
               fps: int = 25) -> Path:
    """Write :func:`face_frames` to ``path`` (H.264, yuv420p); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, face_frames(frames, width, height, seed), fps=fps,
                       options={"preset": "veryfast", "crf": "20"})


def synthetic_crops(root: str | Path, videos: int = 16, windows: int = 2, frames: int = 32, size: int = 64,
                    level: int = 4, val_every: int = 4) -> Path:
    """A crop folder in the crop stage's layout (``<dataset>/<method>/<video>.h5`` with ``clips`` [W, F, S, S, 3]
    in per-window gzip chunks, and ``index.csv``) made of :func:`face_frames` (a real face, so the clips compress
    like face crops); every ``val_every``-th video is in val, the others in train, labels alternate."""
    import h5py
    import pandas as pd

    root = Path(root)
    rows = []
    for v in range(videos):
        label = v % 2
        method = "fake" if label else "real"
        clips = np.stack(face_frames(windows * frames, size, size, seed=v)).reshape(windows, frames, size, size, 3)
        rel = f"bench/{method}/v{v:03d}.h5"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / rel, "w") as f:
            f.create_dataset("clips", data=clips, chunks=(1, frames, size, size, 3), compression="gzip",
                             compression_opts=level)
        split = "val" if v % val_every == val_every - 1 else "train"
        rows += [{"dataset": "bench", "method": method, "video_id": f"v{v:03d}", "label": label, "split": split,
                  "identity": f"id{v}", "file": rel, "window": w} for w in range(windows)]
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root
