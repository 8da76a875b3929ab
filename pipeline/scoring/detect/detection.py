"""``mrl detect``, the detection: find the videos, crop each with the crop stage's own code, score its windows with
``evaluate``'s per-window computation and take the mean (:func:`pipeline.scoring.metrics.video_scores`); Grad-CAM
heatmaps on request."""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from graph_models import MRLModel
from pipeline.ingest.clips import clip_to_tensor
from pipeline.ingest.cropping.video_crop import crop_video
from pipeline.ingest.datasets.common import not_a_file_reason
from pipeline.ingest.faces import FaceDetector
from pipeline.scoring.detect.models import LoadedModel
from pipeline.scoring.detect.outputs import HEATMAP_FILE
from pipeline.scoring.explain import gradcam_windows, overlay
from pipeline.scoring.inference import window_probs
from pipeline.scoring.metrics import video_scores

__all__ = ["DETECT_FORMAT", "VIDEO_EXTENSIONS", "RESERVED_NAMES", "ProgressFn", "FoundVideo", "video_name",
           "find_videos", "detect_video", "write_heatmaps", "detect"]

DETECT_FORMAT = "mrl-detect/1"
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
ProgressFn = Callable[[str, int, int], None]   # (phase, done, total): see detect_video


#: stems of the files a run writes itself in an ``--out`` folder (detections.json, summary.csv): no video takes them
RESERVED_NAMES = {"detections": "detections.json", "summary": "summary.csv"}


@dataclass(frozen=True)
class FoundVideo:
    """One input to score and the name its outputs take (``<out>/<name>.json``, ``<heatmaps>/<name>/``)."""

    path: Path
    name: str          # unique in the run (case-insensitively), a safe file name
    wanted: str        # the name its path alone gives; differs from ``name`` when another input had it first
    clash: str = ""    # why ``name`` is not ``wanted``: the input that had it, or the run's own summary file


def _safe_part(part: str) -> str:
    """A path component as a file name: letters, digits, ``-_.`` kept, the rest ``_``; no leading dot (no
    hidden files, no ``.``/``..``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part).lstrip(".") or "video"


def video_name(path: Path, arg: Path) -> str:
    """The output name of ``path``, found under the input argument ``arg``: its path relative to ``arg``
    without the extension, folders joined by ``__`` (``a/sub/clip.mp4`` given ``a`` -> ``sub__clip``; a file
    given as it is -> its stem). Never contains ``~`` (the mark of a renamed clash, :func:`find_videos`)."""
    rel = path.relative_to(arg).parts if path != arg and arg in path.parents else (path.name,)
    parts = list(rel[:-1]) + [Path(rel[-1]).stem or rel[-1]]
    name = "__".join(_safe_part(p) for p in parts)
    if len(name.encode()) > 200:              # a file name has at most 255 bytes: keep the end, it differs most
        name = "_" + name.encode()[-190:].decode(errors="ignore").lstrip(".")
    return name


def find_videos(inputs: Sequence[str | Path]) -> tuple[list[FoundVideo], bool]:
    """Files as given, folders searched recursively for :data:`VIDEO_EXTENSIONS` (sorted), each with its
    output name (:func:`video_name`); also says whether a folder was among the inputs. What cannot be scored is
    kept, to be reported as skipped with the reason (:func:`_not_scorable`): a path that does not exist, a
    folder with no video inside, and entries of a folder named like videos that are no file (a directory
    ``x.mp4``, a symbolic link loop, a broken link). A file reached twice is scored once.

    Names are unique, case-insensitively (one file system may not tell ``Clip`` from ``clip``): in input order
    (a folder's files sorted), the first input that wants a name gets it; a later one gets ``<name>~2``
    (``~3``, ...: the first not wanted by any input), recorded in ``clash``. :data:`RESERVED_NAMES` are taken
    by the run's own files. The same inputs give the same names."""
    found: list[tuple[Path, str]] = []
    folder = False
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            folder = True
            hits = sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS
                          and not (q.is_dir() and _has_videos(q)))
            found += [(q, video_name(q, p)) for q in hits] or [(p, video_name(p, p))]
        else:
            found.append((p, video_name(p, p)))
    seen, uniq = set(), []
    for p, n in found:
        k = str(p.resolve()) if p.exists() else str(p)
        if k not in seen:
            seen.add(k)
            uniq.append((p, n))
    wanted = {n.casefold() for _, n in uniq}
    holder: dict[str, str] = {r: f"the run's own {f}" for r, f in RESERVED_NAMES.items()}
    out = []
    for p, n in uniq:
        key = n.casefold()
        if key not in holder:
            holder[key] = str(p)
            out.append(FoundVideo(p, n, n))
            continue
        k = 2
        while f"{key}~{k}" in holder or f"{key}~{k}" in wanted:
            k += 1
        holder[f"{key}~{k}"] = str(p)
        out.append(FoundVideo(p, f"{n}~{k}", n, holder[key]))
    return out, folder


def _has_videos(folder: Path) -> bool:
    return any(q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS for q in folder.rglob("*"))


def _not_scorable(path: Path) -> Optional[str]:
    """Why ``path`` is no video file to score (None when it is a file)."""
    why = not_a_file_reason(path)
    if why is None:
        return None
    if why == "not found":
        return "no such file or folder (check the path)"
    if path.is_dir() and not _has_videos(path):
        kind = "a directory named like a video" if path.suffix.lower() in VIDEO_EXTENSIONS else "a folder"
        return f"{kind} with no video file inside (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})"
    return why


def _crops_of(path: Path, model: LoadedModel, detector, workdir: Path, stride: Optional[int],
              max_windows: Optional[int], max_frames: Optional[int],
              progress: Optional[Callable[[int, int], None]] = None) -> tuple[dict, Optional[dict]]:
    """Run the crop stage's code on one file; returns (report, arrays or None when skipped)."""
    cp = model.crop.model_copy(update={"stride": stride, "max_windows_per_video": max_windows,
                                       "max_frames": max_frames, "compression": 0})
    row = {"dataset": "detect", "method": "input", "video_id": path.stem, "path": str(path), "label": 0,
           "split": "test", "identity": "", "source_id": "", "mask_path": "", "size_bytes": ""}
    out = workdir / "crop.h5"
    rep = crop_video(row, model.frames, cp, out, detector=detector, progress=progress)
    if rep.get("skipped"):
        return rep, None
    with h5py.File(out, "r") as f:
        arrays = {"clips": f["clips"][:], "frame_index": f["frame_index"][:]}
    out.unlink(missing_ok=True)
    return rep, arrays


def detect_video(path: str | Path, model: LoadedModel, device: torch.device, detector=None,
                 threshold: Optional[float] = None, stride: Optional[int] = None, max_windows: Optional[int] = None,
                 max_frames: Optional[int] = None, heatmap_dir: Optional[Path] = None, name: Optional[str] = None,
                 batch_size: int = 8, on_progress: Optional[ProgressFn] = None,
                 heatmap_windows: Optional[int] = None) -> dict:
    """Score one video; returns its entry (``status`` ``"ok"`` or ``"skipped"`` with ``reason``).

    ``on_progress(phase, done, total)``: ``"crop"`` per frame of face detection (total: the header's frame
    count, 0 when unknown), ``"score"`` (0 then 1 of 1), ``"heatmaps"`` per window drawn. ``heatmap_windows``:
    draw the Grad-CAM maps of only this many windows, the highest scored (default: every window)."""
    t0 = time.time()
    path = Path(path)
    name = name or path.stem
    thr = threshold if threshold is not None else model.threshold
    entry: dict[str, Any] = {"name": name, "video": str(path), "status": "skipped", "reason": None, "score": None,
                             "decision": None, "is_fake": None, "threshold": thr, "n_windows": 0, "frames_used": 0,
                             "frames_read": 0, "frames_with_face": 0, "fps": None, "window_frames": model.frames,
                             "stride": stride or model.frames, "windows": [], "heatmaps": [],
                             "warnings": list(model.warnings)}
    why = _not_scorable(path)
    if why:
        entry.update(reason=f"{path}: {why}", seconds=round(time.time() - t0, 3))
        return entry
    if detector is None:
        detector = FaceDetector.from_params(model.crop, device=str(device))
    with tempfile.TemporaryDirectory(prefix="mrl-detect-") as tmp:
        try:
            crop_progress = None if on_progress is None else (lambda i, n: on_progress("crop", i, n))
            rep, arrays = _crops_of(path, model, detector, Path(tmp), stride, max_windows, max_frames, crop_progress)
        except Exception as exc:  # one bad video never stops the others
            entry["reason"] = f"error while cropping {path}: {type(exc).__name__}: {exc}"
            entry["seconds"] = round(time.time() - t0, 3)
            return entry
    entry.update(frames_read=int(rep.get("frames_read", 0)), frames_with_face=int(rep.get("frames_with_face", 0)),
                 fps=float(rep.get("fps") or 0.0) or None)
    if rep.get("read_error"):
        entry["warnings"].append(f"incomplete decoding: {rep['read_error']}")
    if arrays is None:
        entry["reason"] = rep["skipped"]
        entry["seconds"] = round(time.time() - t0, 3)
        return entry
    clips, fidx = arrays["clips"], arrays["frame_index"]
    if on_progress is not None:
        on_progress("score", 0, 1)
    probs = window_probs(model.encoder, model.relation, clips, device, batch_size)
    if on_progress is not None:
        on_progress("score", 1, 1)
    wdf = pd.DataFrame({"dataset": "detect", "method": "input", "video_id": name, "window": np.arange(len(probs)),
                        "label": 0, "prob": probs})
    score = float(video_scores(wdf)["score"].iloc[0])
    entry.update(status="ok", score=score, n_windows=int(len(probs)), frames_used=int(np.unique(fidx).size),
                 windows=[{"window": int(i), "first_frame": int(fidx[i, 0]), "last_frame": int(fidx[i, -1]),
                           "prob": float(p)} for i, p in enumerate(probs)])
    if thr is None:
        entry["warnings"].append("no decision threshold stored with the model and none given: using 0.5")
        thr = 0.5
        entry["threshold"] = thr
    entry["is_fake"] = bool(score >= thr)
    entry["decision"] = "fake" if entry["is_fake"] else "real"
    covered = entry["frames_used"] / entry["frames_read"] if entry["frames_read"] else 0.0
    if covered < 0.5:
        entry["warnings"].append(f"only {entry['frames_used']} of {entry['frames_read']} frames are in a scored "
                                 f"window (face track shorter than the video or frames left over)")
    if heatmap_dir is not None:
        chosen = None if heatmap_windows is None else sorted(np.argsort(-probs, kind="stable")[:heatmap_windows])
        entry["heatmaps"] = write_heatmaps(model, clips, fidx, Path(heatmap_dir) / name, device, batch_size=4,
                                           windows=chosen, on_progress=on_progress)
    entry["seconds"] = round(time.time() - t0, 3)
    return entry


def write_heatmaps(model: LoadedModel, clips: np.ndarray, frame_index: np.ndarray, out_dir: Path,
                   device: torch.device, batch_size: int = 4, windows: Optional[Sequence[int]] = None,
                   on_progress: Optional[ProgressFn] = None) -> list[str]:
    """Grad-CAM overlay PNGs, one per snippet: ``out_dir/w{window:03d}_s{snippet}_f{frame}.png`` (the heatmap
    averaged over the snippet, drawn on its middle frame; crop size); of ``windows`` only (default: all). Heatmap
    PNGs already in ``out_dir`` (an earlier run's, :data:`~.outputs.HEATMAP_FILE`) are removed once the new ones
    are written, so the folder shows this video's maps only (``mrl detect`` asks for ``--overwrite`` first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = {p for p in out_dir.iterdir() if HEATMAP_FILE.match(p.name) and p.is_file()}
    full = MRLModel(model.encoder, model.relation)
    D, paths = model.snippet_length, []
    todo = list(range(len(clips))) if windows is None else [int(w) for w in windows]
    for i in range(0, len(todo), batch_size):
        batch = todo[i:i + batch_size]
        x = clip_to_tensor(torch.from_numpy(np.ascontiguousarray(clips[batch]))).to(device)
        heat = gradcam_windows(full, x, per="snippet").numpy()
        if on_progress is not None:
            on_progress("heatmaps", i + len(batch), len(todo))
        for w, h in zip(batch, heat):
            for t, ht in enumerate(h):
                mid = t * D + D // 2
                p = out_dir / f"w{w:03d}_s{t}_f{int(frame_index[w, mid]):06d}.png"
                overlay(clips[w, mid], ht).save(p)
                paths.append(str(p))
    for p in stale - {Path(q) for q in paths}:
        p.unlink(missing_ok=True)
    return paths


def detect(inputs: Sequence[str | Path], model: LoadedModel, device: torch.device | str = "cpu",
           threshold: Optional[float] = None, stride: Optional[int] = None, max_windows: Optional[int] = None,
           max_frames: Optional[int] = None, heatmap_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
           batch_size: int = 8, on_progress: Optional[ProgressFn] = None, heatmap_windows: Optional[int] = None,
           found: Optional[tuple[list[FoundVideo], bool]] = None) -> dict:
    """Score every video of ``inputs`` (files and folders); returns the result document (:data:`DETECT_FORMAT`).
    ``on_progress`` and ``heatmap_windows``: as :func:`detect_video` (``mrl serve`` uses them). ``found``:
    :func:`find_videos` of ``inputs`` when the caller has it already (``mrl detect`` checks its outputs first).
    Inputs renamed for a clash are listed under ``renamed`` (name, wanted, video, clash)."""
    device = torch.device(device)
    videos, folder = found if found is not None else find_videos(inputs)
    detector = FaceDetector.from_params(model.crop, device=str(device)) if videos else None
    show = (folder or len(videos) > 1) if progress is None else progress
    entries = []
    bar = tqdm(videos, desc="detect", unit="video", disable=not show, file=sys.stderr)
    for v in bar:
        bar.set_postfix_str(v.name, refresh=False)
        entries.append(detect_video(v.path, model, device, detector, threshold, stride, max_windows, max_frames,
                                    Path(heatmap_dir) if heatmap_dir else None, v.name, batch_size, on_progress,
                                    heatmap_windows))
    thr = threshold if threshold is not None else model.threshold
    return {"format": DETECT_FORMAT, "model": model.source, "crop": {k: v for k, v in model.crop.model_dump(mode="json").items()
                     if k not in ("out_dir", "compression")},
            "crop_source": model.crop_source, "window_frames": model.frames, "snippet_length": model.snippet_length,
            "threshold": thr if thr is not None else 0.5,
            "threshold_source": ("--threshold" if threshold is not None else
                                 "model (validation EER)" if model.threshold is not None else "default 0.5"),
            "device": str(device), "warnings": list(model.warnings),
            "renamed": [{"name": v.name, "wanted": v.wanted, "video": str(v.path), "clash": v.clash}
                        for v in videos if v.name != v.wanted],
            "videos": entries,
            "totals": {"videos": len(entries), "ok": sum(e["status"] == "ok" for e in entries),
                       "skipped": sum(e["status"] == "skipped" for e in entries),
                       "fake": sum(e["decision"] == "fake" for e in entries),
                       "real": sum(e["decision"] == "real" for e in entries)}}
