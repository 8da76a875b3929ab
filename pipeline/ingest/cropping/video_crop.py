"""One video's crop: decode (PyAV) -> batched, downscaled MTCNN -> main-face track (IoU, gaps bridged) -> smoothed
boxes -> windows of ``clip.frames`` consecutive frames inside one track segment -> square crops, written to one
HDF5 file (:mod:`.h5file`), skipped videos included (zero windows and the reason)."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from pipeline.cpu_kernels import kernel_signature
from pipeline.ingest.cropping.h5file import write_crop_file
from pipeline.ingest.crop_settings import SCHEMA_VERSION, params_hash
from pipeline.ingest.cropping.identity import RUN_FIELDS, _row_dict, content_digest, row_signature
from pipeline.ingest.cropping.prefetch import prefetch
from pipeline.ingest.datasets import VIDEO_KEY_COLUMNS
from pipeline.ingest.faces import (
    FaceDetector,
    Segment,
    crop_window,
    landmarks_to_crop,
    smooth_boxes,
    square_crop,
    track_main_face,
)
from pipeline.ingest.video import ReadStats, VideoError, iter_frames, probe

__all__ = ["TransientReadError", "select_windows", "crop_video", "KEEP_FRAMES_BYTES"]

_KEY = list(VIDEO_KEY_COLUMNS)
#: frames of one video kept in memory between the detection pass and the crop pass (above: decode again)
KEEP_FRAMES_BYTES = 256 * 2**20


class TransientReadError(OSError):
    """The operating system refused or failed to read a video file (not a property of its bytes)."""


def _check_readable(path: str) -> None:
    """Read one byte of ``path``; :class:`TransientReadError` naming the file and the OS error if that fails."""
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise TransientReadError(f"cannot read {path}: {exc.strerror or exc}") from None


def select_windows(segments: list[Segment], frames: int, stride: Optional[int] = None,
                   max_windows: Optional[int] = None) -> list[tuple[int, int]]:
    """``(segment index, offset in segment)`` of every window of ``frames`` consecutive frames inside one
    segment, offsets 0, stride, 2*stride...; at most ``max_windows`` evenly spread over the candidates."""
    stride = stride or frames
    cands = [(si, off) for si, s in enumerate(segments) for off in range(0, len(s) - frames + 1, stride)]
    if max_windows is not None and len(cands) > max_windows:
        pick = np.unique(np.round(np.linspace(0, len(cands) - 1, max_windows)).astype(int))
        cands = [cands[i] for i in pick]
    return cands


class _FrameKeeper:
    """Keeps the frames of the detection pass while their total stays under ``budget`` bytes, so the crop
    pass need not decode the video a second time; past the budget it drops them (``complete`` False)."""

    def __init__(self, budget: int):
        self.budget, self.used, self.complete, self.frames = int(budget), 0, True, []

    def add(self, frame: np.ndarray) -> None:
        if not self.complete:
            return
        self.used += frame.nbytes
        if self.used > self.budget:
            self.complete, self.frames = False, []
        else:
            self.frames.append(frame)


def _resolve_mask(mask_path: str, video_path: str) -> Optional[Path]:
    if not mask_path:
        return None
    p = Path(mask_path)
    if p.exists():
        return p
    q = Path(video_path).parent / mask_path
    return q if q.exists() else p


def crop_video(row, clip_frames: int, crop_params, out_path: str | Path, detector: Optional[FaceDetector] = None,
               device: Optional[str] = "cpu", phash: Optional[str] = None,
               writer: Optional[ThreadPoolExecutor] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Crop one manifest row into ``out_path`` (always written, with zero windows when skipped).

    Returns the report: frames_read, frames_with_face, track_frames, segments, windows, skipped (reason naming
    the file, or None), read_error (a truncated file's decoding error), seconds.

    ``writer``: an executor that writes the HDF5 file off the critical path; the report then holds the
    write's :class:`~concurrent.futures.Future` under ``"_write"`` (:func:`_settle` waits for it). Without
    one the file is written before this returns.
    
    ``progress(frames_read, frames_expected)``: called for every frame of the face-detection pass (the long
    part; ``frames_expected`` is the header's count, capped by ``crop.max_frames``, 0 when unknown).
    """
    t0 = time.time()
    cp = crop_params
    F, S = int(clip_frames), int(cp.image_size)
    r = _row_dict(row)
    out_path = Path(out_path)
    path = r["path"]
    phash = phash or params_hash(F, cp)
    rep: dict[str, Any] = {k: r[k] for k in _KEY}
    rep.update(path=path, fps=0.0, frames_read=0, frames_with_face=0, track_frames=0, segments=0, windows=0,
               skipped=None, read_error=None, mask_error=None)
    clips: list = []
    lms_out: list = []
    boxes_out: list = []
    fidx_out: list = []
    masks_out: Optional[list] = None

    def finish() -> dict:
        rep["windows"] = len(clips)
        rep["seconds"] = round(time.time() - t0, 3)
        attrs = {"dataset": r["dataset"], "method": r["method"], "video_id": r["video_id"], "label": r["label"],
                 "source": path, "fps": float(rep["fps"]),
                 "params_hash": phash, "row": row_signature(r), "schema_version": SCHEMA_VERSION,
                 "kernels": kernel_signature(), "content": content,
                 "clip_frames": F, "image_size": S, "params": json.dumps(cp.model_dump(mode="json"), sort_keys=True),
                 "skipped": rep["skipped"] or "",
                 "report": json.dumps({k: v for k, v in rep.items() if k not in RUN_FIELDS}, sort_keys=True)}
        args = (out_path, attrs, clips, lms_out, boxes_out, fidx_out, masks_out, S, F, cp.compression)
        if writer is None:
            write_crop_file(*args)
        else:
            rep["_write"] = writer.submit(write_crop_file, *args)
        return rep

    # ---- pass 0: can it be opened at all? (an OS-level failure raises: not cached, see process)
    _check_readable(path)
    try:
        content = content_digest(r)      # the bytes the crops come from (stored: a same-size replacement re-runs)
    except OSError as exc:
        raise TransientReadError(f"cannot read {exc.filename or path}: {exc.strerror or exc}") from None
    try:
        info = probe(path)
        rep["fps"] = float(info.fps)
    except VideoError as exc:
        rep["skipped"] = f"unreadable: {exc}"
        return finish()
    w, h = info.size
    smallest = max(int(cp.min_face_size), 12)  # MTCNN's first stage scans 12 px windows at min_face_size
    if min(w, h) < smallest:
        rep["skipped"] = (f"frame too small for face detection ({w} x {h}) in {path}: a face needs at least "
                          f"{smallest} px (crop.min_face_size {cp.min_face_size})")
        return finish()
    available = min(info.frames, cp.max_frames or info.frames)
    if info.frames and available < F:
        rep["skipped"] = (f"too short: {path} has {info.frames} frames"
                          + (f" (crop.max_frames {cp.max_frames})" if available < info.frames else "")
                          + f", a window needs clip.frames = {F} (checked before face detection)")
        return finish()

    # ---- pass 1: detection (streamed, bounded memory)
    if detector is None:
        detector = FaceDetector.from_params(cp, device=device)
    stats = ReadStats()
    kept = _FrameKeeper(KEEP_FRAMES_BYTES)
    on_frame = kept.add
    if progress is not None:
        seen = [0]

        def on_frame(frame: np.ndarray) -> None:
            kept.add(frame)
            seen[0] += 1
            progress(seen[0], int(available or 0))
    try:
        det = detector.detect_stream(prefetch(iter_frames(path, max_frames=cp.max_frames, stats=stats)),
                                     on_frame=on_frame)
    except VideoError as exc:
        rep["skipped"] = f"unreadable: {exc}"
        return finish()
    n = stats.frames_read
    rep["frames_read"] = n
    rep["read_error"] = stats.error
    if stats.error is None and info.frames and n < info.frames and cp.max_frames is None:
        rep["read_error"] = f"{path}: read {n} of {info.frames} frames (truncated or corrupt file?)"
    if n == 0:
        rep["skipped"] = f"no decodable frame in {path}" + (f" ({stats.error})" if stats.error else "")
        return finish()
    rep["frames_with_face"] = int(sum(bool((p >= cp.min_confidence).any()) for p in det.probs))
    segments = track_main_face(det, cp.iou_threshold, cp.max_gap, cp.min_confidence)
    rep["segments"] = len(segments)
    rep["track_frames"] = int(sum(len(s) for s in segments))
    if not segments:
        rep["skipped"] = f"no face found in {path} ({n} frames read)"
        return finish()
    wins = select_windows(segments, F, cp.stride, cp.max_windows_per_video)
    if not wins:
        longest = max(len(s) for s in segments)
        rep["skipped"] = (f"too short: no track segment of {F} frames in {path} (longest {longest} frames, "
                          f"{rep['frames_with_face']} frames with a face of {n} read)")
        return finish()

    # ---- per-frame crop geometry from the smoothed track
    geo: dict[int, tuple] = {}  # frame -> (window, box, landmarks in source px)
    for si, off in wins:
        seg = segments[si]
        sm = smooth_boxes(seg.boxes, cp.smooth)
        for j in range(off, off + F):
            fr = seg.start + j
            if fr not in geo:
                geo[fr] = (crop_window(sm[j], cp.margin), sm[j], seg.landmarks[j])

    # masks (demo fakes)
    mask_arr = None
    mpath = _resolve_mask(r["mask_path"], path)
    if mpath is not None:
        try:
            with np.load(mpath) as z:
                mask_arr = np.asarray(z["masks"], np.uint8)
            if mask_arr.ndim != 3:
                raise ValueError(f"expected masks [F,H,W], got shape {mask_arr.shape}")
        except Exception as exc:
            rep["mask_error"] = f"{mpath}: {exc}"
            mask_arr = None

    # ---- pass 2: crop the frames the windows need (kept from pass 1 when they fit in memory, else decoded
    # again: decoding is deterministic, so both give the same pixels)
    crops: dict[int, tuple] = {}
    last = max(geo)
    frames2 = kept.frames[:last + 1] if kept.complete else prefetch(iter_frames(path, max_frames=min(n, last + 1)))
    del kept
    for fr, frame in enumerate(frames2):
        g = geo.get(fr)
        if g is None:
            continue
        win, box, lm = g
        img = square_crop(frame, box, cp.margin, S, window=win)
        lmc = landmarks_to_crop(lm, box, cp.margin, S, window=win)
        m = None
        if mask_arr is not None:
            H, W = frame.shape[:2]
            mk = mask_arr[fr] if fr < len(mask_arr) else np.zeros((H, W), np.uint8)
            if mk.shape != (H, W):
                mk = np.asarray(Image.fromarray(mk).resize((W, H), Image.NEAREST))
            m = square_crop(mk, box, cp.margin, S, resample=Image.NEAREST, window=win)
        crops[fr] = (img, lmc, np.asarray(box, np.float32), m)
    if mask_arr is not None:
        masks_out = []
    for si, off in wins:
        start = segments[si].start + off
        frs = list(range(start, start + F))
        if any(f not in crops for f in frs):  # second decode ended early (should not happen)
            continue
        clips.append(np.stack([crops[f][0] for f in frs]))
        lms_out.append(np.stack([crops[f][1] for f in frs]))
        boxes_out.append(np.stack([crops[f][2] for f in frs]))
        fidx_out.append(np.asarray(frs, np.int64))
        if masks_out is not None:
            masks_out.append(np.stack([crops[f][3] for f in frs]))
    if not clips:
        rep["skipped"] = f"decoding of {path} failed on the second pass"
    return finish()
