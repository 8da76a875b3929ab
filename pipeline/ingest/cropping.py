"""Face crops of every video in the manifest, as fixed-length windows: the library behind the ``crop`` stage.

Per video (``crop.out_dir/<dataset>/<method>/<video_id>.h5``, written atomically, see docs/CONTRACTS.md):
decode (PyAV) -> batched, downscaled MTCNN -> main-face track (IoU, gaps bridged) -> smoothed boxes -> windows
of ``clip.frames`` consecutive frames inside one track segment (stride ``crop.stride``, default ``clip.frames``,
at most ``crop.max_windows_per_video``, evenly spread) -> square crops ``image_size``.

A video whose output exists with the current params hash and manifest row is not recomputed (a killed run
restarts where it stopped). A skipped video (broken, empty, no face, too short) also gets a file, with no
windows and the reason in its attrs, so it is not retried either until its row (size) or the params change:
those are results of the file's bytes. A file the system cannot read now (permission denied, I/O error,
gone) is not a result: nothing is cached for it, it is reported with ``status: "failed"`` and tried again on
the next run (the stage then fails, so ``dvc repro`` runs it again; see ``pipeline/stages/crop.py``).
A video whose windows cannot hold ``clip.frames`` frames by its header's frame count is skipped as too short
before any face detection.

The stage's ``--shard i/n`` processes the videos at positions ``i-1 (mod n)`` of the sorted manifest and writes
``<out_dir>.shard-i-of-n.json`` beside the folder (:func:`shard_report_path`); ``--merge`` (and a run without
``--shard``) builds ``index.csv`` and ``report.json`` from the per-video files. The stage fails only when no
window at all is left.

Everything inside ``crop.out_dir`` is a function of the videos and the params (the per-video files, ``index.csv``,
``report.json``), so a re-run that recomputes or reuses crops leaves the folder's DVC hash unchanged and the
stages after it are not re-run. What a run did (each video computed, cached or failed, and its seconds) goes
to ``<out_dir>.run.json`` beside the folder (:data:`RUN_FIELDS`; :func:`run_record_path`), outside DVC, as do
the shard reports: a sharded run and its merge leave the same folder as one unsharded run.
"""
from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing
import os
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import h5py
import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.ingest.datasets import MANIFEST_COLUMNS, VIDEO_KEY_COLUMNS, read_manifest
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
from pipeline.runtime import atomic_write, publish

__all__ = ["SCHEMA_VERSION", "MANIFEST_COLUMNS", "INDEX_COLUMNS", "params_hash", "row_signature", "output_path",
           "select_windows", "crop_video", "read_report", "process", "resolve_workers", "prefetch", "merge",
           "load_manifest", "totals", "content_totals", "run_totals", "write_text_atomic", "TransientReadError",
           "FAILED", "RUN_FIELDS", "run_record_path", "shard_report_path"]

SCHEMA_VERSION = 1
#: the fields of a video's report that describe a run, not its crops: kept out of the crop files and out of
#: ``report.json`` (they would change the output's hash at every run), written to :func:`run_record_path`
RUN_FIELDS = ("status", "seconds")
INDEX_COLUMNS = ["dataset", "method", "video_id", "label", "split", "identity", "file", "window"]
_KEY = list(VIDEO_KEY_COLUMNS)
# fields of CropParams that do not change the crops (not part of the hash)
_NOT_HASHED = {"out_dir", "detect_batch", "num_workers"}
#: ``status`` of a video that could not be read this time (not cached, retried on the next run)
FAILED = "failed"


class TransientReadError(OSError):
    """The operating system refused or failed to read a video file (not a property of its bytes)."""


def _check_readable(path: str) -> None:
    """Read one byte of ``path``; :class:`TransientReadError` naming the file and the OS error if that fails."""
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise TransientReadError(f"cannot read {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- identity of an output
def params_hash(clip_frames: int, crop) -> str:
    d = {k: v for k, v in crop.model_dump(mode="json").items() if k not in _NOT_HASHED}
    d["clip_frames"] = int(clip_frames)
    d["schema_version"] = SCHEMA_VERSION
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _row_dict(row) -> dict:
    d = dict(row.items()) if hasattr(row, "items") else dict(row)
    out = {}
    for k in MANIFEST_COLUMNS:
        v = d.get(k, "")
        if v is None or (isinstance(v, float) and np.isnan(v)):
            v = ""
        out[k] = v
    out["label"] = int(out["label"])
    out["size_bytes"] = str(out["size_bytes"])
    for k in out:
        if k != "label":
            out[k] = str(out[k])
    return out


_SPLIT_FIELDS = ("split", "identity", "source_id")


def row_signature(row) -> str:
    """The manifest fields whose change re-runs a video: the row without its split assignment (split,
    identity, source id), which does not change the crop and is written only to ``index.csv``, so
    re-drawn splits, a subset of training identities or a held-out family reuse the crops."""
    return json.dumps({k: v for k, v in _row_dict(row).items() if k not in _SPLIT_FIELDS}, sort_keys=True)


def output_path(out_dir: str | Path, row) -> Path:
    r = _row_dict(row)
    return Path(out_dir) / r["dataset"] / r["method"] / f"{r['video_id']}.h5"


def read_report(path: str | Path, phash: Optional[str] = None, rsig: Optional[str] = None) -> Optional[dict]:
    """The report stored in an output file if it is complete and matches ``phash``/``rsig``; else None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if phash is not None and a.get("params_hash") != phash:
                return None
            if rsig is not None and a.get("row") != rsig:
                return None
            rep = json.loads(a["report"])
            rep["windows"] = int(f["clips"].shape[0]) if "clips" in f else 0
            return rep
    except Exception:
        return None


# --------------------------------------------------------------------------- windows
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


# --------------------------------------------------------------------------- decoding off the critical path
#: frames of one video kept in memory between the detection pass and the crop pass (above: decode again)
KEEP_FRAMES_BYTES = 256 * 2**20
_END = object()


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


def prefetch(frames: Iterable, depth: int = 32) -> Iterator:
    """Iterate ``frames`` in a background thread, at most ``depth`` items ahead (PyAV releases the GIL while it
    decodes, so decoding overlaps face detection). Exceptions of the producer are raised in the consumer;
    a consumer that stops early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        it = iter(frames)
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item = (_END, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            item = (_END, exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                close()
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    t = threading.Thread(target=produce, name="crop-decode", daemon=True)
    t.start()
    try:
        while True:
            x, exc = q.get()
            if x is _END:
                if exc is not None:
                    raise exc
                return
            yield x
    finally:
        stop.set()
        t.join()


# --------------------------------------------------------------------------- one video
def _resolve_mask(mask_path: str, video_path: str) -> Optional[Path]:
    if not mask_path:
        return None
    p = Path(mask_path)
    if p.exists():
        return p
    q = Path(video_path).parent / mask_path
    return q if q.exists() else p


def _write_h5(out_path: Path, attrs: dict, clips, lms, boxes, fidx, masks, S: int, F: int,
              compression: int) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(str(out_path.parent / f".{out_path.name}.tmp*")):
        try:
            os.unlink(stale)
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.tmp")
    os.close(fd)
    try:
        W = len(clips)
        with h5py.File(tmp, "w") as f:
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
        publish(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
                 "clip_frames": F, "image_size": S, "params": json.dumps(cp.model_dump(mode="json"), sort_keys=True),
                 "skipped": rep["skipped"] or "",
                 "report": json.dumps({k: v for k, v in rep.items() if k not in RUN_FIELDS}, sort_keys=True)}
        args = (out_path, attrs, clips, lms_out, boxes_out, fidx_out, masks_out, S, F, cp.compression)
        if writer is None:
            _write_h5(*args)
        else:
            rep["_write"] = writer.submit(_write_h5, *args)
        return rep

    # ---- pass 0: can it be opened at all? (an OS-level failure raises: not cached, see process)
    _check_readable(path)
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


# --------------------------------------------------------------------------- stage
def load_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest (checked by :func:`pipeline.ingest.datasets.read_manifest`) in the stable crop order."""
    return read_manifest(path).sort_values(_KEY, kind="stable").reset_index(drop=True)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(text)


def content_totals(videos: list[dict]) -> dict:
    """Totals of the crops themselves (``report.json``): the same whatever the run did."""
    return {
        "videos": len(videos),
        "videos_with_windows": sum(v.get("windows", 0) > 0 for v in videos),
        "skipped": sum(bool(v.get("skipped")) for v in videos),
        "windows": int(sum(v.get("windows", 0) for v in videos)),
        "frames_read": int(sum(v.get("frames_read", 0) for v in videos)),
        "frames_with_face": int(sum(v.get("frames_with_face", 0) for v in videos)),
    }


def run_totals(videos: list[dict]) -> dict:
    """Totals of what the run did (:func:`run_record_path`): videos computed and reused."""
    return {"computed": sum(v.get("status") == "computed" for v in videos),
            "cached": sum(v.get("status") == "cached" for v in videos)}


def totals(videos: list[dict]) -> dict:
    """Both, for the stage's summary line."""
    return {**content_totals(videos), **run_totals(videos)}


def resolve_workers(num_workers, device: Optional[str] = "cpu") -> int:
    """``crop.num_workers`` as a number of processes: an int as given; ``"auto"``: the CPU cores, at most 8,
    on CPU and GPU alike (each process decodes, detects and crops its own videos; on CPU each gets
    ``cores // workers`` torch threads, with a GPU they share it). Measured on the shared 2-core CPU
    (bench/README.md): 2 processes x 1 thread crop 1.6-2.4x faster than 1 process x 2 threads once a few
    videos amortise the ~5 s start of a worker (importing torch and MTCNN); ``device`` is kept for callers
    that may tune it per device."""
    if num_workers != "auto":
        return max(1, int(num_workers))
    return max(1, min(8, os.cpu_count() or 1))


def _failure_report(row, skipped: str, **extra) -> dict:
    """The report of a video that produced nothing (no frame read, no window)."""
    rep = {k: str(row[k]) for k in _KEY}
    rep.update(path=str(row["path"]), frames_read=0, frames_with_face=0, windows=0, skipped=skipped, **extra)
    return rep


def _error_report(row, exc: BaseException) -> dict:
    return _failure_report(row, f"error while cropping {row['path']}: {type(exc).__name__}: {exc}", _failed=True)


def _settle(row, out: Path, rep: dict) -> dict:
    """Wait for the background write of ``rep`` (if any); a failed write turns into a skip naming the file."""
    fut: Optional[Future] = rep.pop("_write", None)
    if fut is not None:
        try:
            fut.result()
        except Exception as exc:  # noqa: BLE001 - one bad video never stops the others
            rep = _error_report(row, exc)
    if rep.pop("_failed", False):  # no partial file is left behind
        try:
            if out.exists():
                out.unlink()
        except OSError:
            pass
    rep.setdefault("status", "computed")  # FAILED (a transient read error) stays FAILED
    return rep


class _Cropper:
    """Crops videos one after the other in this process: one detector (built on first use), the HDF5 files
    written by a writer thread while the next video is decoded and detected."""

    def __init__(self, clip_frames: int, crop, device: Optional[str], phash: str):
        self.F, self.crop, self.device, self.phash = clip_frames, crop, device, phash
        self.detector: Optional[FaceDetector] = None
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="crop-write")

    def start(self, row) -> tuple[Path, dict]:
        """Crop ``row``; the write may still be running (finish with :func:`_settle`)."""
        out = output_path(self.crop.out_dir, row)
        if self.detector is None:
            self.detector = FaceDetector.from_params(self.crop, device=self.device)
        try:
            rep = crop_video(row, self.F, self.crop, out, detector=self.detector, phash=self.phash,
                             writer=self.writer)
        except TransientReadError as exc:  # nothing cached: retried on the next run
            out.unlink(missing_ok=True)
            rep = _failure_report(row, f"{exc} (not cached: tried again on the next run)", status=FAILED)
        except Exception as exc:  # noqa: BLE001 - one bad video never stops the others
            rep = _error_report(row, exc)
        return out, rep

    def close(self) -> None:
        self.writer.shutdown(wait=True)


_WORKER: Optional[_Cropper] = None


def _worker_init(clip_frames: int, crop, device: Optional[str], phash: str, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = _Cropper(clip_frames, crop, device, phash)


def _worker_crop(row: dict) -> dict:
    out, rep = _WORKER.start(row)
    return _settle(row, out, rep)


def process(rows: pd.DataFrame, clip_frames: int, crop, device: Optional[str] = "cpu",
            progress: bool = True, num_workers=None) -> list[dict]:
    """Crop every row (skipping up-to-date outputs); returns the per-video reports in the order of ``rows``.

    ``num_workers`` (default ``crop.num_workers``, see :func:`resolve_workers`): with 1 the videos are cropped
    in this process; with more, in that many worker processes (spawned, each with its own detector and
    ``cores // workers`` torch threads), one video per task. Either way frames are decoded in a background
    thread and the files written by another, and every video's crops are computed by the same code, frame
    for frame (tests/test_crop.py compares the two paths)."""
    phash = params_hash(clip_frames, crop)
    workers = resolve_workers(crop.num_workers if num_workers is None else num_workers, device)
    reports: list[Optional[dict]] = [None] * len(rows)
    todo: list[tuple[int, dict]] = []
    for k, (_, row) in enumerate(rows.iterrows()):
        rep = read_report(output_path(crop.out_dir, row), phash, row_signature(row))
        if rep is not None:
            rep["status"] = "cached"
            reports[k] = rep
        else:
            todo.append((k, {c: row[c] for c in rows.columns}))
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="crop", unit="video",
               disable=not progress, file=sys.stderr)
    try:
        if workers <= 1 or len(todo) <= 1:
            cropper = _Cropper(clip_frames, crop, device, phash)
            pending: Optional[tuple[int, dict, Path, dict]] = None
            try:
                for k, row in todo:
                    bar.set_postfix_str(f"{row['dataset']}/{row['method']}/{row['video_id']}", refresh=False)
                    out, rep = cropper.start(row)  # the previous video's file is written meanwhile
                    if pending is not None:
                        reports[pending[0]] = _settle(pending[1], pending[2], pending[3])
                        bar.update()
                    pending = (k, row, out, rep)
                if pending is not None:
                    reports[pending[0]] = _settle(pending[1], pending[2], pending[3])
                    bar.update()
            finally:
                cropper.close()
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = multiprocessing.get_context("spawn")  # safe with CUDA and with torch's thread pools
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=(clip_frames, crop, device, phash, threads)) as ex:
                for (k, row), rep in zip(todo, ex.map(_worker_crop, [r for _, r in todo])):
                    reports[k] = rep
                    bar.update()
    finally:
        bar.close()
    return reports


def prune(out_dir: str | Path, keep: set[Path]) -> int:
    """Delete the per-video files not in ``keep`` (videos no longer in the manifest) and folders left
    empty, so the output folder, kept between runs (``persist`` in dvc.yaml), holds exactly what a fresh
    run writes."""
    out_dir = Path(out_dir)
    gone = 0
    for p in sorted(out_dir.rglob("*.h5")):
        if p not in keep:
            p.unlink()
            gone += 1
    for d in sorted((d for d in out_dir.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    return gone


def merge(out_dir: str | Path, manifest: pd.DataFrame, phash: str,
          extra: Optional[list[dict]] = None) -> tuple[pd.DataFrame, dict]:
    """Build and write ``index.csv`` and ``report.json`` from the per-video files (+ :func:`shard_report_path`);
    per-video files of videos not in ``manifest`` are deleted (:func:`prune`)."""
    out_dir = Path(out_dir)
    known: dict[tuple, dict] = {}
    for sp in sorted(out_dir.parent.glob(f"{out_dir.name}.shard-*-of-*.json")):
        try:
            data = json.loads(sp.read_text())
        except Exception:
            continue
        if data.get("params_hash") != phash:
            continue
        for v in data.get("videos", []):
            known[tuple(v[k] for k in _KEY)] = v
    for v in extra or []:
        known[tuple(v[k] for k in _KEY)] = v
    index_rows, videos, outputs = [], [], set()
    for _, row in manifest.iterrows():
        key = tuple(str(row[k]) for k in _KEY)
        out = output_path(out_dir, row)
        outputs.add(out)
        rep = read_report(out, phash, row_signature(row))
        if rep is None:
            prev = known.get(key)
            rep = dict(prev) if prev else {**dict(zip(_KEY, key)), "path": str(row["path"]), "frames_read": 0,
                                            "frames_with_face": 0, "skipped": f"not processed: no crop of "
                                            f"{row['path']} for the current params"}
            rep["windows"] = 0
            rep.setdefault("status", "missing")
        else:
            rep["status"] = known.get(key, {}).get("status", "cached")
        videos.append(rep)
        rel = out.relative_to(out_dir).as_posix()
        for w in range(int(rep["windows"])):
            index_rows.append({"dataset": key[0], "method": key[1], "video_id": key[2], "label": int(row["label"]),
                               "split": str(row["split"]), "identity": str(row["identity"]), "file": rel,
                               "window": w})
    prune(out_dir, outputs)
    index = pd.DataFrame(index_rows, columns=INDEX_COLUMNS)
    report = {"params_hash": phash, "totals": totals(videos), "videos": videos}
    write_text_atomic(out_dir / "index.csv", index.to_csv(index=False))
    content = {"params_hash": phash, "totals": content_totals(videos),
               "videos": [{k: v for k, v in rep.items() if k not in RUN_FIELDS} for rep in videos]}
    write_text_atomic(out_dir / "report.json", json.dumps(content, indent=1, sort_keys=True))
    run = {"params_hash": phash, "totals": run_totals(videos),
           "seconds": round(sum(float(v.get("seconds") or 0.0) for v in videos if v.get("status") == "computed"), 3),
           "videos": [{**{k: rep[k] for k in _KEY}, **{k: rep.get(k) for k in RUN_FIELDS}} for rep in videos]}
    write_text_atomic(run_record_path(out_dir), json.dumps(run, indent=1, sort_keys=True))
    return index, report


def run_record_path(out_dir: str | Path) -> Path:
    """``<out_dir>.run.json``: what the last run of the crop stage did to each video (``status``: computed,
    cached, failed or missing; ``seconds`` of the computed ones). Beside the output folder, not in it: not
    part of the DVC output, which depends on the videos and params only."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.run.json"


def shard_report_path(out_dir: str | Path, i: int, n: int) -> Path:
    """``<out_dir>.shard-i-of-n.json``: what shard ``i`` of ``n`` did to its videos (their reports, with the
    run's status and seconds), read by :func:`merge`. Beside the output folder, like :func:`run_record_path`."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.shard-{i}-of-{n}.json"
