"""The HDF5 file of one video's crops (layout: docs/CONTRACTS.md), written atomically through
:func:`pipeline.runtime.atomic_path`."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import h5py
import numpy as np

from pipeline.runtime import atomic_path

__all__ = ["write_crop_file"]


def write_crop_file(out_path: Path, attrs: dict, clips, lms, boxes, fidx, masks, S: int, F: int,
                    compression: int) -> None:
    """Write one video's windows (``clips [W, F, S, S, 3]`` uint8, landmarks, boxes, frame indices, masks or
    None) and its ``attrs`` to ``out_path``: a temp file beside it, renamed over it once complete. Temp files a
    killed run left beside it are removed first."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{out_path.name}.*.tmp", f".{out_path.name}.tmp*"):  # ours, and the previous code's
        for stale in glob.glob(str(out_path.parent / pattern)):
            try:
                os.unlink(stale)
            except OSError:
                pass
    W = len(clips)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        gz = dict(compression="gzip", compression_opts=compression) if compression > 0 else {}
        f.create_dataset("clips", data=np.asarray(clips, np.uint8).reshape(W, F, S, S, 3),
                         chunks=(1, F, S, S, 3), maxshape=(None, F, S, S, 3), **gz)
        f.create_dataset("landmarks", data=np.asarray(lms, np.float32).reshape(W, F, 5, 2))
        f.create_dataset("boxes", data=np.asarray(boxes, np.float32).reshape(W, F, 4))
        f.create_dataset("frame_index", data=np.asarray(fidx, np.int64).reshape(W, F))
        if masks is not None:
            f.create_dataset("masks", data=np.asarray(masks, np.uint8).reshape(W, F, S, S),
                             chunks=(1, F, S, S), maxshape=(None, F, S, S), **gz)
        for k, v in attrs.items():
            f.attrs[k] = v
