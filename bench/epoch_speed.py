"""Where the time of a train_encoder epoch goes: windows/s of each part, measured apart, then together.

    python bench/epoch_speed.py [--size demo|paper] [--device cpu|cuda] [--workers 0,2] [--videos 24]
                                [--windows 2] [--batch 8] [--epochs 2] [--crops DIR] [--tiny]

Crops: generated here (bench/_media.py: a real face picture moving, gzip-4 per-window chunks as the crop
stage writes them), or ``--crops DIR`` (e.g. data/crops). Parts, each over the training windows:

- ``read``: iterate the training DataLoader only (HDF5 read + gzip + collate), per ``--workers`` setting,
  with a new loader per epoch (worker start-up each epoch: the old code) and with the one persistent loader
  train_encoder now keeps;
- ``to_input``: ``clip_batch_to_input`` (host-to-device copy on CUDA, pinned or not; uint8 -> float);
- ``compute``: forward + backward + Adam step of the stage's model on one batch already on the device
  (mixed precision on CUDA), i.e. the ceiling the loader has to keep up with;
- ``validate``: forward over the val windows;
- ``epoch``: ``train_encoder`` itself, seconds per epoch from its history (training + validation).
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

import torch  # noqa: E402
import yaml  # noqa: E402

from _media import synthetic_crops  # noqa: E402
from encoder_speed import make_train_step  # noqa: E402
from graph_models import build_model  # noqa: E402
from pipeline.ingest.clips import ClipDataset, EpochShuffle, clip_batch_to_input, window_loader  # noqa: E402
from pipeline.learning.encoder import predict_windows, train_encoder  # noqa: E402
from pipeline.params import parse_params  # noqa: E402
from pipeline.runtime import epoch_generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"demo": dict(frames=32, snippet=8, image=64, backbone="small3d", hidden=64, mlp=128),
         "paper": dict(frames=100, snippet=20, image=112, backbone="mc3_18", hidden=128, mlp=256)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_params(size: str, device: str, batch: int, workers: int, epochs: int, crops: Path):
    """params.yaml at the given size, as the train_encoder stage reads it."""
    z = SIZES[size]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(seed=0, device=device, clip={"frames": z["frames"], "snippet_length": z["snippet"]})
    raw["crop"].update(image_size=z["image"], out_dir=str(crops))
    raw["encoder"].update(backbone=z["backbone"], pretrained=None)
    raw["train_encoder"].update(epochs=epochs, batch_size=batch, num_workers=workers)
    raw["train_encoder"]["relation"].update(hidden=z["hidden"], mlp_hidden=z["mlp"])
    return parse_params(raw)


def read_rate(crops: Path, batch: int, workers: int, epochs: int, persistent: bool, pin: bool) -> float:
    """Windows/s of iterating the training loader ``epochs`` times (loader construction included)."""
    n = 0
    t = time.perf_counter()
    if persistent:
        order = EpochShuffle(len(ClipDataset(crops, split="train")))
        loader = window_loader(str(crops), "train", batch, workers, sampler=order, persistent=True, pin_memory=pin)
    for e in range(epochs):
        if persistent:
            order.set_generator(epoch_generator(0, e))
        else:
            loader = window_loader(str(crops), "train", batch, workers, shuffle_gen=epoch_generator(0, e),
                                   pin_memory=pin)
        for b in loader:
            n += len(b["label"])
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader num_workers settings")
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--windows", type=int, default=2, help="windows per generated video")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed compute steps")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--crops", default=None, help="an existing crop folder instead of generated crops")
    ap.add_argument("--skip-epoch", action="store_true", help="skip the full train_encoder epochs")
    ap.add_argument("--only-read", action="store_true", help="only the read part (e.g. paper size on CPU)")
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = ap.parse_args(argv)
    if args.tiny:
        args.videos, args.windows, args.batch, args.epochs, args.steps = 8, 1, 4, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available")
        return 2
    pin = device.type == "cuda"
    z = SIZES[args.size]
    tmp = Path(tempfile.mkdtemp(prefix="mrl-bench-epoch-"))
    try:
        frames, image = (8, 32) if args.tiny else (z["frames"], z["image"])
        crops = Path(args.crops) if args.crops else synthetic_crops(tmp / "crops", args.videos, args.windows,
                                                                     frames, image)
        ds = ClipDataset(crops, split="train")
        n_train, n_val = len(ds), len(ClipDataset(crops, split="val"))
        f, s = ds[0]["clip"].shape[:2]
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"device: {name}; {args.size} size, windows [{f}, {s}, {s}, 3], {n_train} train + {n_val} val, "
              f"batch {args.batch}")
        p = stage_params(args.size, args.device, args.batch, 0, args.epochs, crops)
        if args.tiny:
            p = p.model_copy(update={"clip": p.clip.model_copy(update={"frames": 8, "snippet_length": 4}),
                                     "encoder": p.encoder.model_copy(update={"width": 4, "heads": 4})})
        res = {}
        for w in [int(x) for x in args.workers.split(",")]:
            for persistent in ((False, True) if w else (False,)):
                key = f"read workers={w}{' persistent' if persistent else ' new loader/epoch'}"
                res[key] = read_rate(crops, args.batch, w, args.epochs, persistent, pin)
        if args.only_read:
            args.skip_epoch = True
        loader = window_loader(str(crops), "train", args.batch, 0, pin_memory=pin)
        batches = [] if args.only_read else [b for b, _ in zip(loader, range(4))]
        t = time.perf_counter()
        for b in batches:
            x = clip_batch_to_input(b["clip"], device)
        _sync(device)
        if batches:
            res["to_input (host->device, uint8->float)"] = sum(len(b["label"]) for b in batches) / (time.perf_counter() - t)
        if args.only_read:
            return _print(res)
        model = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        y = batches[0]["label"].to(device).float()
        x = clip_batch_to_input(batches[0]["clip"], device)
        step = make_train_step(model, opt, x, y, p.train_encoder, device)

        model.train()
        step()
        _sync(device)
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        res["compute (fwd+bwd+Adam, batch on device)"] = len(y) * args.steps / (time.perf_counter() - t)
        val = window_loader(str(crops), "val", args.batch, 0, pin_memory=pin)
        t = time.perf_counter()
        predict_windows(model, val, device)
        _sync(device)
        res["validate (forward over val)"] = n_val / (time.perf_counter() - t)
        if not args.skip_epoch:
            for w in [int(x) for x in args.workers.split(",")]:
                pe = stage_params(args.size, args.device, args.batch, w, args.epochs, crops)
                if args.tiny:
                    pe = pe.model_copy(update={"clip": p.clip, "encoder": p.encoder})
                out = train_encoder(pe.encoder, pe.clip, pe.train_encoder, crops, tmp / f"run{w}", seed=pe.seed,
                                    device=pe.device, image_size=pe.crop.image_size)
                secs = [h["seconds"] for h in out.fit.history]
                res[f"epoch train_encoder workers={w} (train+val windows/s, last epoch)"] = (n_train + n_val) / secs[-1]
        return _print(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _print(res: dict) -> int:
    print(f"{'part':64s} {'windows/s':>10s}")
    for k, v in res.items():
        print(f"{k:64s} {v:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
