"""``mrl detect``: score videos with a trained MRL model (and explain the score with Grad-CAM heatmaps).

    mrl detect VIDEO_OR_FOLDER [...] [--encoder models/encoder.pt --relation models/relation.pt]
               [--mlflow-run RUN_ID | --mlflow-model models:/NAME/VERSION --trust-pickle]
               [--out detections] [--threshold T] [--stride FRAMES] [--heatmaps DIR] [--device auto|cpu|cuda]

Per video: the crop stage's own code (:func:`pipeline.ingest.cropping.crop_video`: PyAV decode -> MTCNN -> main-face
track -> smoothed boxes -> square crops) with the crop settings the model was TRAINED with (read from the
encoder file, key ``crop``; params.yaml's ``crop`` section with a warning for older files), windows of
``T x D`` frames slid over the whole video (stride = window length unless ``--stride``), then the per-window
computation of ``evaluate`` (:mod:`pipeline.scoring.inference`: encoder -> vertices -> relation -> sigmoid) and the
video score of ``evaluate`` (:func:`pipeline.scoring.metrics.video_scores`: the mean over windows). A video is called
fake when ``score >= threshold`` (default: the validation EER threshold stored in ``models/relation.pt``).

A broken, faceless or too short video gets ``"status": "skipped"`` and the reason; the others go on.
Model files are loaded with ``torch.load(weights_only=True)`` (:mod:`pipeline.model_io`): no code in them
runs. An MLflow model is a pickle (arbitrary code runs when it is loaded) and needs ``--trust-pickle``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np
import pandas as pd
import torch
import yaml
from tqdm import tqdm

from feature_cache import sha256_file
from graph_models import MRLModel, RelationLearner
from pipeline.ingest.clips import clip_to_tensor
from pipeline.ingest.cropping import crop_video
from pipeline.ingest.datasets.common import not_a_file_reason
from pipeline.ingest.faces import FaceDetector
from pipeline.model_card import crop_params_from_model
from pipeline.model_io import load_encoder, load_relation, read_model_file
from pipeline.params import CropParams
from pipeline.runtime import resolve_device, write_csv, write_json
from pipeline.scoring.explain import gradcam_windows, overlay
from pipeline.scoring.inference import window_probs
from pipeline.scoring.metrics import video_scores
from pipeline.tracking import tracking_uri as default_uri

# MLflow is imported inside load_mlflow_model on purpose (deferred heavy import, seconds): scoring model
# files never needs it.

__all__ = ["DETECT_FORMAT", "VIDEO_EXTENSIONS", "LoadedModel", "PickleRefused", "load_model_files",
           "load_mlflow_model", "find_videos", "detect_video", "detect", "write_outputs", "add_arguments",
           "run", "main"]

DETECT_FORMAT = "mrl-detect/1"
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
SUMMARY_COLUMNS = ["name", "video", "status", "score", "decision", "threshold", "n_windows", "frames_used",
                   "frames_read", "reason"]

PICKLE_MESSAGE = (
    "refusing to load {what} without --trust-pickle: MLflow stores PyTorch models of this pipeline as pickles "
    "(serialization_format='pickle'), and unpickling a file runs whatever code it contains, with your "
    "permissions. Pass --trust-pickle only for a model you or your own pipeline logged to a tracking server you "
    "trust; the model files models/encoder.pt and models/relation.pt hold tensors and metadata only and load "
    "safely (torch.load(weights_only=True)) without it.")


class PickleRefused(PermissionError):
    """An MLflow (pickled) model was requested without ``--trust-pickle``."""


# --------------------------------------------------------------------------- the model
@dataclass
class LoadedModel:
    """Everything detect needs: the two halves of the model, the crop settings, the threshold."""

    encoder: torch.nn.Module
    relation: torch.nn.Module
    crop: CropParams
    frames: int                       # F = T * D frames per window
    snippet_length: int               # D
    threshold: Optional[float]        # stored decision threshold (validation EER), None if unknown
    crop_source: str                  # "model", a params file, or "mlflow run <id> params"
    source: dict                      # where the model came from (paths / uris, hashes)
    warnings: list = field(default_factory=list)

    @property
    def snippets(self) -> int:
        return self.frames // self.snippet_length


def _check_pair(encoder, relation, frames: int, snippet_length: int, rel_meta: Optional[dict]) -> None:
    if relation.heads != encoder.heads or relation.in_dim != encoder.out_dim:
        raise ValueError(f"relation expects vertices [N={relation.heads}, C={relation.in_dim}] but the encoder "
                         f"gives [N={encoder.heads}, C={encoder.out_dim}]: the two files do not belong together")
    if rel_meta and rel_meta.get("snippets") and int(rel_meta["snippets"]) != frames // snippet_length:
        raise ValueError(f"relation was trained on {rel_meta['snippets']} snippets per window, the encoder makes "
                         f"{frames // snippet_length}")


def load_model_files(encoder_path: str | Path = "models/encoder.pt", relation_path: str | Path = "models/relation.pt",
                     device: torch.device | str = "cpu", fallback_params: Optional[str | Path] = "params.yaml"
                     ) -> LoadedModel:
    """The pipeline's model files (safe ``weights_only`` loading) with their crop settings and threshold."""
    encoder, emeta = load_encoder(encoder_path, device)
    relation, rmeta = load_relation(relation_path, device)
    frames, D = int(emeta["clip"]["frames"]), int(emeta["clip"]["snippet_length"])
    _check_pair(encoder, relation, frames, D, rmeta)
    crop, frames, crop_source, warnings = crop_params_from_model(emeta, fallback_params)
    sha = sha256_file(encoder_path)
    if rmeta.get("encoder_sha256") and rmeta["encoder_sha256"] != sha:
        warnings.append(f"{relation_path} was trained on the features of another encoder than {encoder_path} "
                        f"(SHA-256 differs): its scores are not reliable; re-run cache_features + train_relation")
    thr = rmeta.get("threshold")
    return LoadedModel(encoder, relation, crop, frames, D, None if thr is None else float(thr), crop_source,
                       {"encoder": str(encoder_path), "relation": str(relation_path), "encoder_sha256": sha,
                        "relation_encoder_sha256": rmeta.get("encoder_sha256") or None,
                        "encoder_params": emeta.get("encoder"), "clip": emeta.get("clip"),
                        "relation_params": rmeta.get("relation")}, warnings)


def _parse_param(v: str) -> Any:
    if v == "":
        return None
    try:
        return yaml.safe_load(v)
    except Exception:
        return v


def _crop_from_run_params(params: dict) -> tuple[Optional[CropParams], Optional[int], Optional[int]]:
    crop = {k[len("crop."):]: _parse_param(v) for k, v in params.items() if k.startswith("crop.")}
    crop = {k: v for k, v in crop.items() if k in CropParams.model_fields}
    frames = _parse_param(params.get("clip.frames", ""))
    D = _parse_param(params.get("clip.snippet_length", ""))
    return (CropParams(**crop) if crop else None), frames, D


def load_mlflow_model(uri: str, trust_pickle: bool = False, device: torch.device | str = "cpu",
                      encoder_path: Optional[str | Path] = None, fallback_params: Optional[str | Path] = "params.yaml",
                      tracking_uri: Optional[str] = None) -> LoadedModel:
    """A model logged to MLflow: ``runs:/RUN_ID/model`` or ``models:/NAME/VERSION`` (``models:/NAME@alias``).

    The full model logged by ``train_encoder`` (encoder + its relation head) is used as it is; a relation
    learner logged by ``train_relation`` is paired with the encoder file ``encoder_path``. The crop settings
    come from the encoder file when it is used, else from the run's logged params (``crop.*``, ``clip.*``);
    the threshold from the run's ``threshold`` metric (train_relation), else none (0.5 with a warning).
    Raises :class:`PickleRefused` without ``trust_pickle`` (see :data:`PICKLE_MESSAGE`)."""
    if not trust_pickle:
        raise PickleRefused(PICKLE_MESSAGE.format(what=uri))
    import mlflow  # deferred on purpose (seconds to import): see the note at the top
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri or default_uri())
    client = MlflowClient()
    run_id = None
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].split("/")[0]
    elif uri.startswith("models:/"):
        ref = uri[len("models:/"):]
        try:
            if "@" in ref:
                name, alias = ref.split("@", 1)
                run_id = client.get_model_version_by_alias(name, alias).run_id
            else:
                name, version = ref.split("/", 1)
                run_id = client.get_model_version(name, version).run_id
        except Exception:
            run_id = None
    model = mlflow.pytorch.load_model(uri, map_location=torch.device(device) if not isinstance(device, torch.device)
                                      else device)
    warnings: list[str] = []
    run = client.get_run(run_id) if run_id else None
    params = run.data.params if run else {}
    if isinstance(model, MRLModel):
        encoder, relation, emeta_path = model.encoder, model.relation, None
        warnings.append("scoring with the relation head trained jointly with the encoder (train_encoder's model), "
                        "not the train_relation stage's relation learner")
    elif isinstance(model, RelationLearner):
        if encoder_path is None:
            raise ValueError(f"{uri} is a relation learner: give the encoder file it was trained with (--encoder)")
        encoder, _ = load_encoder(encoder_path, device)
        relation, emeta_path = model, encoder_path
    else:
        raise ValueError(f"{uri}: expected an MRLModel or a RelationLearner, got {type(model).__name__}")
    encoder.to(device).eval()
    relation.to(device).eval()
    frames, D = None, encoder.snippet_length
    if emeta_path is not None:
        emeta = read_model_file(emeta_path, "mrl-encoder/1")
        crop, frames, crop_source, w = crop_params_from_model(emeta, fallback_params)
        warnings += w
    else:
        crop, frames, d = _crop_from_run_params(params)
        crop_source = f"mlflow run {run_id} params"
        if crop is None or frames is None:
            raise ValueError(f"{uri}: the run's params do not record the crop settings (crop.*, clip.frames)")
        if d and int(d) != D:
            raise ValueError(f"run params say snippet_length {d}, the model's encoder uses {D}")
    _check_pair(encoder, relation, int(frames), D, None)
    thr = None
    if run is not None and "threshold" in run.data.metrics:
        thr = float(run.data.metrics["threshold"])
    return LoadedModel(encoder, relation, crop, int(frames), D, thr, crop_source,
                       {"mlflow_model": uri, "mlflow_run_id": run_id, "encoder": str(emeta_path) if emeta_path else None},
                       warnings)


# --------------------------------------------------------------------------- inputs
def find_videos(inputs: Sequence[str | Path]) -> tuple[list[Path], bool]:
    """Files as given, folders searched recursively for :data:`VIDEO_EXTENSIONS` (sorted); also says whether a
    folder was among the inputs. What cannot be scored is kept, to be reported as skipped with the reason
    (:func:`_not_scorable`): a path that does not exist, a folder with no video inside, and entries of a folder
    named like videos that are no file (a directory ``x.mp4``, a symbolic link loop, a broken link)."""
    out: list[Path] = []
    folder = False
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            folder = True
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS
                           and not (q.is_dir() and _has_videos(q)))
            out += found or [p]
        else:
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        k = str(p.resolve()) if p.exists() else str(p)
        if k not in seen:
            seen.add(k)
            uniq.append(p)
    return uniq, folder


def _has_videos(folder: Path) -> bool:
    return any(q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS for q in folder.rglob("*"))


def _not_scorable(path: Path) -> Optional[str]:
    """Why ``path`` is no video file to score (None when it is a file)."""
    why = not_a_file_reason(path)
    if why is None or why == "not found":
        return None                               # a missing file keeps the decoder's "file not found"
    if path.is_dir() and not _has_videos(path):
        kind = "a directory named like a video" if path.suffix.lower() in VIDEO_EXTENSIONS else "a folder"
        return f"{kind} with no video file inside (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})"
    return why


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names, used = [], {}
    for p in paths:
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem) or "video"
        n = used.get(base, 0)
        used[base] = n + 1
        names.append(base if n == 0 else f"{base}_{n}")
    return names


# --------------------------------------------------------------------------- one video
def _crops_of(path: Path, model: LoadedModel, detector, workdir: Path, stride: Optional[int],
              max_windows: Optional[int], max_frames: Optional[int]) -> tuple[dict, Optional[dict]]:
    """Run the crop stage's code on one file; returns (report, arrays or None when skipped)."""
    cp = model.crop.model_copy(update={"stride": stride, "max_windows_per_video": max_windows,
                                       "max_frames": max_frames, "compression": 0})
    row = {"dataset": "detect", "method": "input", "video_id": path.stem, "path": str(path), "label": 0,
           "split": "test", "identity": "", "source_id": "", "mask_path": "", "size_bytes": ""}
    out = workdir / "crop.h5"
    rep = crop_video(row, model.frames, cp, out, detector=detector)
    if rep.get("skipped"):
        return rep, None
    with h5py.File(out, "r") as f:
        arrays = {"clips": f["clips"][:], "frame_index": f["frame_index"][:]}
    out.unlink(missing_ok=True)
    return rep, arrays


def detect_video(path: str | Path, model: LoadedModel, device: torch.device, detector=None,
                 threshold: Optional[float] = None, stride: Optional[int] = None, max_windows: Optional[int] = None,
                 max_frames: Optional[int] = None, heatmap_dir: Optional[Path] = None, name: Optional[str] = None,
                 batch_size: int = 8) -> dict:
    """Score one video; returns its entry (``status`` ``"ok"`` or ``"skipped"`` with ``reason``)."""
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
            rep, arrays = _crops_of(path, model, detector, Path(tmp), stride, max_windows, max_frames)
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
    probs = window_probs(model.encoder, model.relation, clips, device, batch_size)
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
        entry["heatmaps"] = write_heatmaps(model, clips, fidx, Path(heatmap_dir) / name, device, batch_size=4)
    entry["seconds"] = round(time.time() - t0, 3)
    return entry


def write_heatmaps(model: LoadedModel, clips: np.ndarray, frame_index: np.ndarray, out_dir: Path,
                   device: torch.device, batch_size: int = 4) -> list[str]:
    """Grad-CAM overlay PNGs, one per snippet: ``out_dir/w{window:03d}_s{snippet}_f{frame}.png`` (the heatmap
    averaged over the snippet, drawn on its middle frame; crop size)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    full = MRLModel(model.encoder, model.relation)
    D, paths = model.snippet_length, []
    for i in range(0, len(clips), batch_size):
        x = clip_to_tensor(torch.from_numpy(np.ascontiguousarray(clips[i:i + batch_size]))).to(device)
        heat = gradcam_windows(full, x, per="snippet").numpy()
        for b, h in enumerate(heat):
            w = i + b
            for t, ht in enumerate(h):
                mid = t * D + D // 2
                p = out_dir / f"w{w:03d}_s{t}_f{int(frame_index[w, mid]):06d}.png"
                overlay(clips[w, mid], ht).save(p)
                paths.append(str(p))
    return paths


# --------------------------------------------------------------------------- many videos
def detect(inputs: Sequence[str | Path], model: LoadedModel, device: torch.device | str = "cpu",
           threshold: Optional[float] = None, stride: Optional[int] = None, max_windows: Optional[int] = None,
           max_frames: Optional[int] = None, heatmap_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
           batch_size: int = 8) -> dict:
    """Score every video of ``inputs`` (files and folders); returns the result document (:data:`DETECT_FORMAT`)."""
    device = torch.device(device)
    videos, folder = find_videos(inputs)
    names = _unique_names(videos)
    detector = FaceDetector.from_params(model.crop, device=str(device)) if videos else None
    show = (folder or len(videos) > 1) if progress is None else progress
    entries = []
    bar = tqdm(list(zip(videos, names)), desc="detect", unit="video", disable=not show, file=sys.stderr)
    for v, n in bar:
        bar.set_postfix_str(n, refresh=False)
        entries.append(detect_video(v, model, device, detector, threshold, stride, max_windows, max_frames,
                                    Path(heatmap_dir) if heatmap_dir else None, n, batch_size))
    thr = threshold if threshold is not None else model.threshold
    return {"format": DETECT_FORMAT, "model": model.source, "crop": {k: v for k, v in model.crop.model_dump(mode="json").items()
                     if k not in ("out_dir", "compression")},
            "crop_source": model.crop_source, "window_frames": model.frames, "snippet_length": model.snippet_length,
            "threshold": thr if thr is not None else 0.5,
            "threshold_source": ("--threshold" if threshold is not None else
                                 "model (validation EER)" if model.threshold is not None else "default 0.5"),
            "device": str(device), "warnings": list(model.warnings), "videos": entries,
            "totals": {"videos": len(entries), "ok": sum(e["status"] == "ok" for e in entries),
                       "skipped": sum(e["status"] == "skipped" for e in entries),
                       "fake": sum(e["decision"] == "fake" for e in entries),
                       "real": sum(e["decision"] == "real" for e in entries)}}


def _json_safe(o):
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_json_safe(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_outputs(result: dict, out: str | Path) -> dict:
    """``out`` ending in ``.json``: one JSON with every video, and ``<out stem>.csv`` beside it. Otherwise a
    folder: ``<name>.json`` per video, ``detections.json`` (all) and ``summary.csv``. Returns the paths."""
    out = Path(out)
    header = {k: v for k, v in result.items() if k not in ("videos", "totals")}
    paths: dict[str, Any] = {}
    if out.suffix.lower() == ".json":
        write_json(_json_safe(result), out)
        paths["json"] = str(out)
        csv = out.with_suffix(".csv")
    else:
        out.mkdir(parents=True, exist_ok=True)
        per = []
        for e in result["videos"]:
            p = out / f"{e['name']}.json"
            write_json(_json_safe({**header, **e}), p)
            per.append(str(p))
        write_json(_json_safe(result), out / "detections.json")
        paths.update(json=str(out / "detections.json"), per_video=per)
        csv = out / "summary.csv"
    write_csv(pd.DataFrame([{k: e.get(k) for k in SUMMARY_COLUMNS} for e in result["videos"]],
                           columns=SUMMARY_COLUMNS), csv)
    paths["csv"] = str(csv)
    return paths


def output_problem(out: str | Path) -> Optional[str]:
    """Why ``--out`` cannot take the results (checked BEFORE any scoring, so no work is lost), or None."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        if out.is_dir():
            return f"--out {out} is a folder; a .json output must be a file path"
        parent = out.parent
    else:
        if out.exists() and not out.is_dir():
            return (f"--out {out} is an existing file; give a folder (per-video JSON + summary.csv) or a path "
                    f"ending in .json")
        parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        return f"--out {out}: cannot write under {parent}"
    return None


# --------------------------------------------------------------------------- command line
def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("inputs", nargs="+", help="video files and/or folders (searched recursively)")
    m = ap.add_argument_group("model (default: the pipeline's model files)")
    m.add_argument("--encoder", default="models/encoder.pt", help="encoder file (default %(default)s)")
    m.add_argument("--relation", default="models/relation.pt", help="relation file (default %(default)s)")
    src = m.add_mutually_exclusive_group()
    src.add_argument("--mlflow-run", metavar="RUN_ID", help="the model of a train_relation or train_encoder MLflow run (runs:/RUN_ID/model; see below)")
    src.add_argument("--mlflow-model", metavar="URI", help="a registered model, models:/NAME/VERSION or models:/NAME@ALIAS")
    m.add_argument("--trust-pickle", action="store_true",
                   help="allow loading an MLflow model, which is a pickle: loading it runs code from the file")
    m.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: as the pipeline)")
    m.add_argument("--params", default="params.yaml",
                   help="fallback crop settings for model files that do not carry them (default %(default)s)")
    ap.add_argument("--out", default="detections",
                    help="output folder (per-video JSON, detections.json, summary.csv) or a .json file")
    ap.add_argument("--threshold", type=float, default=None,
                    help="decision threshold on the video score (default: the validation EER threshold of the model)")
    ap.add_argument("--stride", type=int, default=None, help="frames between window starts (default: window length)")
    ap.add_argument("--max-windows", type=int, default=None, help="at most this many windows per video (evenly spread)")
    ap.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per video")
    ap.add_argument("--heatmaps", default=None, metavar="DIR", help="write Grad-CAM overlay PNGs per snippet here")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-progress", action="store_true")
    return ap


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print("detect: --threshold must be in [0, 1]", file=sys.stderr)
        return 2
    for flag in ("stride", "max_windows", "max_frames", "batch_size"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            print(f"detect: --{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    problem = output_problem(args.out)
    if problem:
        print(f"detect: {problem}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        if args.mlflow_run or args.mlflow_model:
            uri = f"runs:/{args.mlflow_run}/model" if args.mlflow_run else args.mlflow_model
            enc = args.encoder if Path(args.encoder).exists() else None
            model = load_mlflow_model(uri, args.trust_pickle, device, enc, args.params, args.tracking_uri)
        else:
            model = load_model_files(args.encoder, args.relation, device, args.params)
    except PickleRefused as exc:
        print(f"detect: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"detect: cannot load the model: {exc}", file=sys.stderr)
        return 2
    for w in model.warnings:
        print(f"detect: warning: {w}", file=sys.stderr)
    result = detect(args.inputs, model, device, args.threshold, args.stride, args.max_windows, args.max_frames,
                    args.heatmaps, None if not args.no_progress else False, args.batch_size)
    paths = write_outputs(result, args.out)
    for e in result["videos"]:
        if e["status"] == "ok":
            print(f"{e['name']}: {e['decision']} (score {e['score']:.4f}, threshold {e['threshold']:.4f}, "
                  f"{e['n_windows']} windows, {e['frames_used']} frames)")
        else:
            print(f"{e['name']}: skipped: {e['reason']}")
    t = result["totals"]
    print(f"detect: {t['videos']} videos, {t['ok']} scored ({t['fake']} fake, {t['real']} real), {t['skipped']} "
          f"skipped -> {paths['json']}, {paths['csv']}")
    return 0 if t["ok"] > 0 else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="mrl detect", description=__doc__.split("\n\n")[0])
    return run(add_arguments(ap).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
