"""Test helpers shared by several test modules (import with ``from helpers import make_video``)."""
from __future__ import annotations

import functools
import io
from pathlib import Path

import av
import numpy as np

__all__ = ["make_video", "encode_video", "write_crop_dir"]


@functools.lru_cache(maxsize=32)
def encode_video(frames: int = 4, size: int = 32, seed: int = 0, fps: int = 25) -> bytes:
    """Bytes of a tiny real H.264 MP4 (yuv420p, ``size`` x ``size``) of random-noise frames."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for _ in range(frames):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def make_video(path: str | Path, frames: int = 4, size: int = 32, seed: int = 0) -> Path:
    """Write a tiny decodable MP4 at ``path`` (parents created); identical args give identical bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_video(frames, size, seed))
    return path


def write_crop_dir(root: str | Path, videos: list[tuple[str, str, int, np.ndarray]],
                   landmarks: np.ndarray | None = None) -> Path:
    """A crop folder in the ``crop`` stage's layout (docs/CONTRACTS.md): one HDF5 file per video holding
    ``clips`` uint8 [W, F, S, S, 3], and ``index.csv``. ``videos``: (split, method, label, clips) each;
    ``landmarks`` [5, 2] (crop pixels): stored for every frame of every window."""
    import h5py
    import pandas as pd

    root = Path(root)
    rows = []
    for k, (split, method, label, clips) in enumerate(videos):
        vid = f"v{k:03d}"
        rel = f"demo/{method}/{vid}.h5"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / rel, "w") as f:
            f.create_dataset("clips", data=clips, chunks=(1,) + clips.shape[1:], compression="gzip",
                             compression_opts=1)
            f.attrs.update(dataset="demo", method=method, video_id=vid, label=label, split=split)
            if landmarks is not None:
                f.create_dataset("landmarks", data=np.broadcast_to(
                    np.asarray(landmarks, np.float32), clips.shape[:2] + (5, 2)).copy())
        rows += [{"dataset": "demo", "method": method, "video_id": vid, "label": label, "split": split,
                  "identity": vid, "file": rel, "window": w} for w in range(len(clips))]
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the scripts folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
