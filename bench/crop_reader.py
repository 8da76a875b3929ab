"""Crop reader throughput: windows/s of ClipDataset (the train_encoder / cache_features reader), with 0 and
2 DataLoader workers, for two HDF5 chunk layouts of ``clips`` [W, F, S, S, 3]:

- per-window chunks (1, F, S, S, 3): the crop stage's layout (docs/CONTRACTS.md), one chunk = one window;
- per-frame chunks (1, 1, S, S, 3): F chunks (F gzip streams, F index lookups) per window.

    python bench/crop_reader.py [--crops data/crops] [--videos 24] [--epochs 2] [--batch 8] [--device cpu] [--tiny]

The clips are generated here (bench/_media.py: a real face picture moving; random noise would not
compress like faces), or taken from ``--crops`` (the demo crops of ``dvc repro crop``), and rewritten in
both layouts (same gzip level) in a temporary folder; the reader draws windows in a shuffled order, one
window per __getitem__, as training does.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _media import synthetic_crops  # noqa: E402
from pipeline.ingest.clips import ClipDataset  # noqa: E402
from pipeline.distributed import seed_worker  # noqa: E402


def write_layout(src_root: Path, index: pd.DataFrame, dst: Path, per_frame: bool, level: int) -> int:
    """Rewrite the clips of ``index``'s files into ``dst`` with the given chunking; returns bytes written."""
    total = 0
    for rel in index["file"].unique():
        with h5py.File(src_root / rel, "r") as f:
            clips = f["clips"][()]
        w, fr, s, _, c = clips.shape
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(out, "w") as g:
            g.create_dataset("clips", data=clips, chunks=(1, 1, s, s, c) if per_frame else (1, fr, s, s, c),
                             compression="gzip", compression_opts=level)
        total += out.stat().st_size
    index.to_csv(dst / "index.csv", index=False)
    return total


def windows_per_s(root: Path, workers: int, epochs: int, batch: int, device: torch.device) -> float:
    """Windows/s of reading every window ``epochs`` times (on CUDA: pinned, copied to the device too)."""
    ds = ClipDataset(root)
    cuda = device.type == "cuda"
    n = 0
    t = time.perf_counter()
    for e in range(epochs):
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(e), pin_memory=cuda,
                                             worker_init_fn=seed_worker if workers else None)
        for b in loader:
            if cuda:
                b["clip"].to(device, non_blocking=True)
            n += len(b["label"])
    if cuda:
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", default=None, help="a crop folder (default: generated demo-size crops)")
    ap.add_argument("--videos", type=int, default=24, help="videos taken from the crop index")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--level", type=int, default=4, help="gzip level (crop.compression default 4)")
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    ap.add_argument("--device", default="cpu", help="cuda: batches are also pinned and copied to the GPU")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available")
        return 2
    if args.tiny:
        args.videos, args.epochs = 4, 1
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="mrl-bench-reader-"))
    try:
        src = Path(args.crops) if args.crops else synthetic_crops(
            tmp / "src", args.videos, 2, 8 if args.tiny else 32, 32 if args.tiny else 64, args.level,
            val_every=10**6)
        return _run(src, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(src: Path, tmp: Path, args) -> int:
    index = pd.read_csv(src / "index.csv", dtype={"video_id": str, "identity": str}, keep_default_na=False)
    files = list(dict.fromkeys(index["file"]))[: args.videos]
    index = index[index["file"].isin(files)].reset_index(drop=True)
    with h5py.File(src / files[0], "r") as f:
        shape = f["clips"].shape[1:]
    print(f"{len(index)} windows of {len(files)} videos, window {list(shape)} uint8 "
          f"({np.prod(shape) / 2**20:.2f} MiB raw), gzip {args.level}, batch {args.batch}, {args.epochs} epochs")
    res = {}
    for name, per_frame in (("per-window chunks (current)", False), ("per-frame chunks", True)):
        root = tmp / ("frame" if per_frame else "window")
        size = write_layout(src, index, root, per_frame, args.level)
        for workers in (0, 2):
            res[(name, workers)] = windows_per_s(root, workers, args.epochs, args.batch, torch.device(args.device))
            print(f"{name:28s} workers={workers}: {res[(name, workers)]:7.1f} windows/s   "
                  f"(files {size / 2**20:.1f} MiB)")
    for workers in (0, 2):
        a, b = res[("per-window chunks (current)", workers)], res[("per-frame chunks", workers)]
        print(f"workers={workers}: per-window / per-frame = {a / b:.2f}x -> "
              f"{'per-window (current) is faster' if a > b else 'per-frame is faster'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
