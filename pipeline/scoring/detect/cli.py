"""``mrl detect``: score videos with a trained MRL model (and explain the score with Grad-CAM heatmaps).

    mrl detect VIDEO_OR_FOLDER [...] [--encoder models/encoder.pt --relation models/relation.pt]
               [--mlflow-run RUN_ID | --mlflow-model models:/NAME/VERSION --trust-pickle]
               [--out detections] [--overwrite] [--threshold T] [--stride FRAMES] [--heatmaps DIR]
               [--device auto|cpu|cuda]

Per video: the crop stage's own code (:func:`pipeline.ingest.cropping.crop_video`: PyAV decode -> MTCNN -> main-face
track -> smoothed boxes -> square crops) with the crop settings the model was TRAINED with (read from the
encoder file, key ``crop``; params.yaml's ``crop`` section with a warning for older files), windows of
``T x D`` frames slid over the whole video (stride = window length unless ``--stride``), then the per-window
computation of ``evaluate`` (:mod:`pipeline.scoring.inference`: encoder -> vertices -> relation -> sigmoid) and the
video score of ``evaluate`` (:func:`pipeline.scoring.metrics.video_scores`: the mean over windows). A video is called
fake when ``score >= threshold`` (default: the validation EER threshold stored in ``models/relation.pt``).

A broken, faceless or too short video gets ``"status": "skipped"`` and the reason; the others go on.
Each video's outputs are named after its path relative to the input argument it was found under
(:func:`~pipeline.scoring.detect.detection.find_videos`: ``a/sub/clip.mp4`` given ``a`` -> ``sub__clip``; a clash
-> ``clip~2``, listed under ``renamed``). Before any work, a run that would replace a file it did not write (an
earlier run's JSON, CSV or heatmaps) stops with the file named, unless ``--overwrite``.
Model files are loaded with ``torch.load(weights_only=True)`` (:mod:`pipeline.model_io`): no code in them
runs. An MLflow model is a pickle (arbitrary code runs when it is loaded) and needs ``--trust-pickle``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from pipeline.model_options import add_model_arguments, project_defaults
from pipeline.runtime import resolve_device
from pipeline.scoring.detect.detection import detect, find_videos
from pipeline.scoring.detect.models import LoadedModel, PickleRefused, load_from_options
from pipeline.scoring.detect.outputs import existing_outputs, output_problem, planned_outputs, write_outputs

__all__ = ["add_arguments", "open_model_or_explain", "run", "main"]


def open_model_or_explain(args: argparse.Namespace, prog: str) -> Optional[tuple[torch.device, LoadedModel]]:
    """:func:`load_from_options` on ``args.device`` for a command-line program: ``(device, model)``, its load
    warnings printed as ``prog: warning: ...``; ``None`` after one clear line on stderr (no traceback) when the
    device or the model cannot be had (a pickle refused, a file missing or unreadable)."""
    try:
        device = resolve_device(args.device)
        model = load_from_options(args, device)
    except PickleRefused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"{prog}: cannot load the model: {exc}", file=sys.stderr)
        return None
    for w in model.warnings:
        print(f"{prog}: warning: {w}", file=sys.stderr)
    return device, model


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("inputs", nargs="+", help="video files and/or folders (searched recursively)")
    add_model_arguments(ap, run_help="the model of a train_relation or train_encoder MLflow run "
                                     "(runs:/RUN_ID/model; see below)")
    ap.add_argument("--out", default="detections",
                    help="output folder (<name>.json per video, detections.json, summary.csv) or a .json file "
                         "(and the .csv beside it); <name>: the video's path below the input folder, e.g. "
                         "sub__clip; a clash gets clip~2")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace outputs that exist already (by default a run that would replace a file it "
                         "did not write stops before any work, naming it)")
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
    found = find_videos(args.inputs)
    names = [v.name for v in found[0]]
    files, dirs = planned_outputs(args.out, names, args.heatmaps)
    both = sorted(set(files) & set(dirs))
    if both:
        print(f"detect: {both[0]} would be both an output file and a heatmap folder: give --heatmaps another "
              f"folder", file=sys.stderr)
        return 2
    existing = existing_outputs(args.out, names, args.heatmaps)
    if existing:
        shown = ", ".join(_describe(p, dirs) for p in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        if not args.overwrite:
            print(f"detect: {shown}{more} exist{'s' if len(existing) == 1 else ''} already and this run did not "
                  f"write {'it' if len(existing) == 1 else 'them'}: pass --overwrite to replace, or give another "
                  f"--out{' / --heatmaps' if any(p in dirs for p in existing) else ''}", file=sys.stderr)
            return 2
        bad = [p for p in existing if p in dirs and not p.is_dir()]
        if bad:
            print(f"detect: {bad[0]} is no folder and cannot hold heatmaps: remove it or give another --heatmaps",
                  file=sys.stderr)
            return 2
        print(f"detect: --overwrite: replacing {len(existing)} existing output{'s' if len(existing) > 1 else ''}: "
              f"{shown}{more}", file=sys.stderr)
    for v in found[0]:
        if v.name != v.wanted:
            print(f"detect: {v.path} is named {v.name} ({v.wanted} is {v.clash})", file=sys.stderr)
    project_defaults(args, "detect")
    opened = open_model_or_explain(args, "detect")
    if opened is None:
        return 2
    device, model = opened
    result = detect(args.inputs, model, device, args.threshold, args.stride, args.max_windows, args.max_frames,
                    args.heatmaps, None if not args.no_progress else False, args.batch_size, found=found)
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


def _describe(path: Path, heatmap_dirs: Sequence[Path]) -> str:
    return f"{path}/ (heatmaps)" if path in heatmap_dirs else str(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="mrl detect", description=__doc__.split("\n\n")[0])
    return run(add_arguments(ap).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
