"""Crop speed, offline (videos generated here from matplotlib's sample portrait, see bench/_media.py):

1. face detection: batched + downscaled MTCNN vs one call per full-resolution frame, on the same frames;
2. the crop stage's library (``pipeline.ingest.cropping.process``: decode, detect, track, crop, write HDF5)
   over a set of videos, in one process and with ``crop.num_workers`` worker processes; the crops of every
   setting are compared with the first one (they must be identical).

    python bench/crop_speed.py [--frames 120] [--threads 1] [--max-side 320] [--batch 16] [--device cpu]
                               [--videos 6 --video-frames 64 --video-size 192 --workers 1,2]
                               [--skip-detector] [--skip-stage] [--tiny]

Prints frames/s (and videos/s for the stage part) of each path; ``--tiny`` is a seconds-long smoke run.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _media import face_video  # noqa: E402
from pipeline.ingest import cropping  # noqa: E402
from pipeline.ingest.faces import FaceDetector  # noqa: E402
from pipeline.ingest.video import read_frames  # noqa: E402
from pipeline.params import parse_params  # noqa: E402
from pipeline.runtime import resolve_workers  # noqa: E402


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def detector_speed(tmp: Path, args) -> None:
    """Part 1: batched + downscaled vs per-frame full-resolution MTCNN on two 640x360 videos."""
    from facenet_pytorch import MTCNN  # deferred: heavy import, as in pipeline.ingest.faces

    batched = FaceDetector(max_side=args.max_side, batch=args.batch, device=args.device)
    single = MTCNN(keep_all=True, select_largest=False, post_process=False, device=args.device)
    tot = {"n": 0, "dec": 0.0, "b": 0.0, "s": 0.0}
    for seed in (0, 1):
        path = face_video(tmp / f"det{seed}.mp4", args.frames, 640, 360, seed=seed)
        t = time.perf_counter()
        frames = read_frames(path)
        t_dec = time.perf_counter() - t
        n = len(frames)
        batched.detect(frames[: min(4, n)])  # warm-up
        single.detect(frames[0])
        _sync(args.device)
        t = time.perf_counter()
        det = batched.detect(frames)
        _sync(args.device)
        t_b = time.perf_counter() - t
        t = time.perf_counter()
        found = 0
        for f in frames:
            boxes, _, _ = single.detect(f, landmarks=True)
            found += boxes is not None and len(boxes) > 0
        _sync(args.device)
        t_s = time.perf_counter() - t
        print(f"video {seed}: {n:4d} frames 640x360: decode {n / t_dec:7.1f} f/s | batched+downscaled "
              f"{n / t_b:6.1f} f/s (faces in {det.frames_with_face}/{n}) | per-frame full-res {n / t_s:6.1f} f/s "
              f"(faces in {found}/{n}) | ratio {t_s / t_b:4.2f}x")
        for k, v in (("n", n), ("dec", t_dec), ("b", t_b), ("s", t_s)):
            tot[k] += v
    n = tot["n"]
    ratio = tot["s"] / tot["b"]
    print(f"DETECTOR {n} frames: batched {n / tot['b']:.1f} f/s vs per-frame {n / tot['s']:.1f} f/s -> "
          f"ratio {ratio:.2f}x (target >= 2x: {'OK' if ratio >= 2 else 'MISSED'})")


def _same(a: Path, b: Path) -> bool:
    """Same pixels (clips, masks) and frame indices; boxes and landmarks within 1e-3 px. MTCNN's float sums
    depend on the number of torch threads, so a worker process with fewer threads than this one can give
    boxes that differ by float rounding (measured: up to 1.3e-5 px), never a different crop pixel."""
    for p in sorted(a.rglob("*.h5")):
        with h5py.File(p) as f, h5py.File(b / p.relative_to(a)) as g:
            if sorted(f) != sorted(g):
                return False
            for k in f:
                x, y = f[k][:], g[k][:]
                ok = np.allclose(x, y, rtol=0, atol=1e-3) if k in ("boxes", "landmarks") else np.array_equal(x, y)
                if not ok:
                    return False
    return True


def stage_speed(tmp: Path, args) -> list[dict]:
    """Part 2: cropping.process over ``--videos`` generated videos for each ``--workers`` setting."""
    rows = []
    for i in range(args.videos):
        p = face_video(tmp / "videos" / f"v{i}.mp4", args.video_frames, args.video_size, args.video_size, seed=i)
        rows.append(dict(dataset="bench", method="real", video_id=f"v{i}", path=str(p), label=0, split="train",
                         identity=f"id{i}", source_id="", mask_path="", size_bytes=p.stat().st_size))
    rows = pd.DataFrame(rows)
    F = args.clip_frames
    out = []
    first = None
    for w in args.workers.split(","):
        w = w.strip()
        crop = parse_params({"clip": {"frames": F, "snippet_length": 4 if F % 4 == 0 else 1},
                             "crop": {"image_size": args.image_size, "out_dir": str(tmp / f"crops-{w}"),
                                      "detect_batch": args.batch, "detect_max_side": args.max_side,
                                      "num_workers": w if w == "auto" else int(w)}}).crop
        workers = resolve_workers(crop.num_workers, args.device)
        t = time.perf_counter()
        reps = cropping.process(rows, F, crop, device=args.device, progress=False)
        dt = time.perf_counter() - t
        frames = sum(r["frames_read"] for r in reps)
        same = "reference" if first is None else ("identical" if _same(first, Path(crop.out_dir)) else "DIFFERENT")
        first = first or Path(crop.out_dir)
        r = {"workers": workers, "videos/s": len(rows) / dt, "frames/s": frames / dt, "crops": same}
        out.append(r)
        print(f"STAGE num_workers={w} ({workers} process{'es' if workers > 1 else ''}): {len(rows)} videos "
              f"{args.video_size}x{args.video_size} x {args.video_frames} frames in {dt:.1f} s: "
              f"{r['videos/s']:.2f} videos/s, {r['frames/s']:.1f} frames/s "
              f"({sum(x['windows'] for x in reps)} windows; crops {same})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120, help="frames per video of the detector comparison")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16, help="MTCNN batch (crop.detect_batch)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--video-frames", type=int, default=64)
    ap.add_argument("--video-size", type=int, default=192)
    ap.add_argument("--clip-frames", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="comma-separated crop.num_workers settings (int or auto)")
    ap.add_argument("--skip-detector", action="store_true")
    ap.add_argument("--skip-stage", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = ap.parse_args(argv)
    if args.tiny:
        args.frames, args.videos, args.video_frames, args.video_size, args.clip_frames = 8, 2, 8, 96, 4
        args.image_size = 32
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads={torch.get_num_threads()} device={args.device} max_side={args.max_side} "
          f"batch={args.batch}")
    tmp = Path(tempfile.mkdtemp(prefix="mrl-bench-crop-"))
    try:
        if not args.skip_detector:
            detector_speed(tmp, args)
        if not args.skip_stage:
            res = stage_speed(tmp, args)
            if any(r["crops"] == "DIFFERENT" for r in res):
                print("FAILED: crops differ between num_workers settings")
                return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
