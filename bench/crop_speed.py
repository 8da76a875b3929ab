"""Face-detection speed of the crop stage: batched + downscaled MTCNN vs one call per full-resolution frame.

    python bench/crop_speed.py [--frames 120] [--threads 1] [--max-side 320] [--batch 16]

Frames are decoded once up front (decoding is timed separately), then each detector path runs on the same
frames. Prints frames/s of both paths per video and overall, and the ratio (target >= 2x).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from facenet_pytorch import MTCNN  # noqa: E402

from pipeline.ingest.demo.sources import fetch  # noqa: E402
from pipeline.ingest.faces import FaceDetector  # noqa: E402
from pipeline.ingest.video import read_frames  # noqa: E402

VIDEOS = ["WolfgangLanger_Pexels.mp4", "single_face.mp4"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    batched = FaceDetector(max_side=args.max_side, batch=args.batch, device=args.device)
    single = MTCNN(keep_all=True, select_largest=False, post_process=False, device=args.device)
    tot = {"n": 0, "dec": 0.0, "b": 0.0, "s": 0.0}
    print(f"torch threads={args.threads} device={args.device} max_side={args.max_side} batch={args.batch}")
    for name in VIDEOS:
        t = time.perf_counter()
        frames = read_frames(fetch(name), max_frames=args.frames)
        t_dec = time.perf_counter() - t
        n = len(frames)
        batched.detect(frames[: min(4, n)])  # warm-up
        single.detect(frames[0])
        t = time.perf_counter()
        det = batched.detect(frames)
        t_b = time.perf_counter() - t
        t = time.perf_counter()
        found = 0
        for f in frames:
            boxes, _, _ = single.detect(f, landmarks=True)
            found += boxes is not None and len(boxes) > 0
        t_s = time.perf_counter() - t
        h, w = frames[0].shape[:2]
        print(f"{name:28s} {n:4d} frames {w}x{h}: decode {n / t_dec:7.1f} f/s | batched+downscaled "
              f"{n / t_b:6.1f} f/s (faces in {det.frames_with_face}/{n}) | per-frame full-res {n / t_s:6.1f} f/s "
              f"(faces in {found}/{n}) | ratio {t_s / t_b:4.2f}x")
        tot["n"] += n
        tot["dec"] += t_dec
        tot["b"] += t_b
        tot["s"] += t_s
    n = tot["n"]
    ratio = tot["s"] / tot["b"]
    print(f"TOTAL {n} frames: batched {n / tot['b']:.1f} f/s vs per-frame {n / tot['s']:.1f} f/s -> "
          f"ratio {ratio:.2f}x (target >= 2x: {'OK' if ratio >= 2 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
