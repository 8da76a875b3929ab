"""Video decoding helpers on PyAV (no OpenCV).

* :func:`probe` – frame count, fps, size, codec of a file; a :class:`VideoError` naming the file for a
  missing, empty or undecodable file.
* :func:`iter_frames` – RGB ``uint8`` frames ``[H, W, 3]`` whatever the source pixel format (grayscale, odd
  sizes, 10-bit, ...), with the container's display rotation applied. A truncated or corrupt file does not
  raise: iteration stops at the first undecodable point and the optional :class:`ReadStats` says how many frames
  were read and why it stopped.
"""
from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import av
import numpy as np

__all__ = ["VideoError", "VideoInfo", "ReadStats", "probe", "iter_frames", "read_frames", "write_video", "filled_heap"]


class VideoError(RuntimeError):
    """A video cannot be opened or holds no decodable video stream; the message names the file."""


@dataclass
class VideoInfo:
    path: str
    frames: int          # container's frame count, or an estimate from duration*fps (0 when unknown)
    fps: float
    width: int
    height: int
    codec: str
    pix_fmt: Optional[str]
    rotation: int = 0    # degrees counter-clockwise applied by iter_frames
    duration: Optional[float] = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as displayed (after rotation)."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height


@dataclass
class ReadStats:
    """Filled in by :func:`iter_frames`: frames yielded and, if decoding stopped early, why."""

    frames_read: int = 0
    error: Optional[str] = None
    errors: list = field(default_factory=list)


def _open(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except Exception as exc:  # av.error.InvalidDataError, FileNotFoundError, ...
        raise VideoError(f"{path}: cannot open as a video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def _fps(stream) -> float:
    for rate in (stream.average_rate, stream.base_rate, stream.guessed_rate):
        if rate:
            return float(rate)
    return 0.0


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps, size and codec of ``path``; :class:`VideoError` naming the file when it is broken."""
    container = _open(path)
    try:
        s = container.streams.video[0]
        cc = s.codec_context
        fps = _fps(s)
        duration = None
        if s.duration is not None and s.time_base:
            duration = float(s.duration * s.time_base)
        elif container.duration:
            duration = container.duration / 1e6
        frames = int(s.frames or 0)
        if not frames and duration and fps:
            frames = int(round(duration * fps))
        width, height = cc.width, cc.height
        if not width or not height:
            raise VideoError(f"{path}: video stream has no frame size (codec {cc.name})")
        rotation = 0
        try:  # rotation is known only per frame (display matrix side data): decode the first one
            first = next(container.decode(s))
            rotation = int(getattr(first, "rotation", 0) or 0)
        except StopIteration:
            raise VideoError(f"{path}: no decodable video frame (empty stream)") from None
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path}: cannot decode the first frame: {exc}") from None
        return VideoInfo(str(path), frames, fps, width, height, cc.name, cc.format.name if cc.format else None,
                         rotation, duration)
    finally:
        container.close()


def _to_rgb(frame) -> np.ndarray:
    arr = frame.to_ndarray(format="rgb24")
    rot = int(getattr(frame, "rotation", 0) or 0)
    k = int(round(rot / 90.0)) % 4
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k=k))
    return arr


def iter_frames(path: str | Path, max_frames: Optional[int] = None,
                stats: Optional[ReadStats] = None) -> Iterator[np.ndarray]:
    """Yield RGB ``uint8 [H, W, 3]`` frames of ``path`` in display order.

    Opening problems raise :class:`VideoError`; a decoding error later on (truncated/corrupt file) ends the
    iteration quietly, recorded in ``stats.error`` (``stats.frames_read`` counts what was yielded).
    """
    stats = stats if stats is not None else ReadStats()
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        it = container.decode(stream)
        while max_frames is None or stats.frames_read < max_frames:
            try:
                frame = next(it)
            except StopIteration:
                break
            except (av.error.FFmpegError, EOFError, OSError, ValueError) as exc:
                stats.error = f"{path}: decoding stopped after {stats.frames_read} frames: {exc}"
                stats.errors.append(stats.error)
                break
            try:
                arr = _to_rgb(frame)
            except Exception as exc:  # an unconvertible frame: stop like a corrupt stream
                stats.error = f"{path}: frame {stats.frames_read} cannot be converted to RGB: {exc}"
                stats.errors.append(stats.error)
                break
            stats.frames_read += 1
            yield arr
    finally:
        container.close()


def read_frames(path: str | Path, max_frames: Optional[int] = None,
                stats: Optional[ReadStats] = None) -> list[np.ndarray]:
    """All (or the first ``max_frames``) frames of ``path`` as a list (see :func:`iter_frames`)."""
    return list(iter_frames(path, max_frames=max_frames, stats=stats))


_M_PERTURB = -6      # mallopt(3): fill every malloc'd block with a fixed byte
_PERTURB_BYTE = 0xA5


@contextlib.contextmanager
def filled_heap():
    """Make heap memory handed out by glibc's malloc start as a fixed byte pattern while encoding.

    Measured: the libx264 build in the PyAV wheel reads some memory it has not written, so the same
    frames gave different bitstreams depending on what the process had allocated before (a clip
    encoded after another one, or in another worker, came out different: 15 of 80 demo files, decoded
    pixels off by up to 63 levels). With every block filled at allocation (glibc's M_PERTURB, the
    knob behind ``MALLOC_PERTURB_``), 1 and 2 worker processes write byte-identical files
    (tests/test_demo.py). Elsewhere than glibc this is a no-op. Every encoder of the project runs inside it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        yield
        return
    mallopt(_M_PERTURB, _PERTURB_BYTE)
    try:
        yield
    finally:
        mallopt(_M_PERTURB, 0)


def write_video(path: str | Path, frames, fps: float = 25, codec: str = "libx264",
                pix_fmt: str = "yuv420p", options: Optional[dict] = None,
                container_options: Optional[dict] = None) -> Path:
    """Encode RGB ``uint8`` frames to ``path`` (used by tests and benchmarks).
    ``container_options`` e.g. ``{"movflags": "faststart"}`` (index at the front of an mp4)."""
    path = Path(path)
    frames = list(frames)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    h, w = frames[0].shape[:2]
    with filled_heap(), av.open(str(path), "w", options=container_options or {}) as out:
        s = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if options:
            s.options = options
        for f in frames:
            if f.ndim == 2:
                f = np.repeat(f[..., None], 3, axis=2)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f, dtype=np.uint8), format="rgb24")
            for pkt in s.encode(vf):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path
