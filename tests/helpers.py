"""Test helpers shared by several test modules (import with ``from helpers import make_video``)."""
from __future__ import annotations

import functools
import io
from pathlib import Path

import av
import numpy as np

__all__ = ["make_video", "encode_video"]


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
