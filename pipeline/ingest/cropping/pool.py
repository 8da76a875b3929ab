"""Cropping many videos: in this process (one detector, the HDF5 files written by a writer thread while the next
video is decoded and detected) or in a pool of worker processes, one video per task; up-to-date outputs are
reused, and one bad video never stops the others.

MTCNN runs with :data:`DETECT_THREADS` torch threads wherever it runs: a sum split over another number of
threads is added in another order, and the boxes would differ in their last bits (measured: up to 1.3e-5 px
between 1 and 2 threads) between a run in worker processes and one in this process (``crop.num_workers: 1``,
or a resumed run with one video left to crop). So the crops do not depend on ``num_workers`` or on the cores."""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from tqdm import tqdm

from pipeline.cpu_kernels import kernel_signature
from pipeline.ingest.crop_settings import params_hash
from pipeline.ingest.cropping.identity import content_digest, output_path, read_report, row_signature
from pipeline.ingest.cropping.video_crop import TransientReadError, crop_video
from pipeline.ingest.datasets import VIDEO_KEY_COLUMNS
from pipeline.ingest.faces import FaceDetector
from pipeline.runtime import resolve_workers

__all__ = ["FAILED", "process"]

_KEY = list(VIDEO_KEY_COLUMNS)
#: torch threads of the face detector, in this process and in every worker (see the module docstring)
DETECT_THREADS = 1
#: ``status`` of a video that could not be read this time (not cached, retried on the next run)
FAILED = "failed"


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


def _worker_init(clip_frames: int, crop, device: Optional[str], phash: str) -> None:
    global _WORKER
    torch.set_num_threads(DETECT_THREADS)
    _WORKER = _Cropper(clip_frames, crop, device, phash)


def _worker_crop(row: dict) -> dict:
    out, rep = _WORKER.start(row)
    return _settle(row, out, rep)


def process(rows: pd.DataFrame, clip_frames: int, crop, device: Optional[str] = "cpu",
            progress: bool = True, num_workers=None) -> list[dict]:
    """Crop every row (skipping up-to-date outputs); returns the per-video reports in the order of ``rows``.

    ``num_workers`` (default ``crop.num_workers``, see :func:`resolve_workers`): with 1 the videos are cropped
    in this process; with more, in that many worker processes (spawned, each with its own detector), one video
    per task. Either way frames are decoded in a background thread and the files written by another, and every
    video's crops are computed by the same code with :data:`DETECT_THREADS` torch threads, frame for frame
    (tests/test_crop.py compares the two paths bit for bit)."""
    phash, kernels = params_hash(clip_frames, crop), kernel_signature()
    workers = resolve_workers(crop.num_workers if num_workers is None else num_workers, device)
    reports: list[Optional[dict]] = [None] * len(rows)
    todo: list[tuple[int, dict]] = []
    for k, (_, row) in enumerate(rows.iterrows()):
        rep = read_report(output_path(crop.out_dir, row), phash, row_signature(row), kernels,
                          content=lambda: content_digest(row))
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
            threads = torch.get_num_threads()
            torch.set_num_threads(DETECT_THREADS)
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
                torch.set_num_threads(threads)
        else:
            ctx = multiprocessing.get_context("spawn")  # safe with CUDA and with torch's thread pools
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=(clip_frames, crop, device, phash)) as ex:
                for (k, row), rep in zip(todo, ex.map(_worker_crop, [r for _, r in todo])):
                    reports[k] = rep
                    bar.update()
    finally:
        bar.close()
    return reports
