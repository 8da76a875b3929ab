"""Encoder throughput (clips/s), training (forward + backward + Adam step) and inference (no_grad, eval),
at the demo size (small3d, 64 px, 32 frames) and the paper size (mc3_18, 112 px, 100 frames).

    python bench/encoder_speed.py [--threads 2] [--device cpu] [--batch 4] [--paper-iters 1] [--skip-paper]
    python bench/encoder_speed.py --compare [--sizes 64,112] [--models small3d,mobilenet_v2:0,mobilenet_v2:11]
                                  [--batch 8] [--iters 2] [--repeats 2] [--train-windows 500] [--val-windows 100]

``--compare``: the backbones side by side at the demo's clip (32 frames, D = 8, N = 12) and each crop size,
on one fixed batch: seconds per training step and per validation batch, and from them the seconds of one
train_encoder epoch over ``--train-windows`` + ``--val-windows`` windows (steps x step time; data loading,
which bench/epoch_speed.py measures, not included) and of ``--epochs`` epochs. ``mobilenet_v2:k`` is
``encoder.freeze_blocks = k``. The configurations take turns ``--repeats`` times; the fastest turn counts
(the machine is shared).

The whole MRL model of the train_encoder stage is timed (backbone + STA + its relation head + Eq. 12
loss). On CPU the paper size costs ~25 s per forward+backward of ONE clip, so it runs --paper-iters
iterations of batch 1 after one warm-up. On CUDA it runs with the stages' mixed precision.
"""
from __future__ import annotations

import argparse
import sys
import time
import copy
import math
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_models import build_model, mrl_loss  # noqa: E402
from pipeline.params import parse_params  # noqa: E402
from pipeline.runtime import autocast  # noqa: E402

SIZES = {
    "demo": {"clip": {"frames": 32, "snippet_length": 8}, "crop": {"image_size": 64},
             "encoder": {"backbone": "small3d", "width": 16, "heads": 12, "pretrained": None},
             "train_encoder": {"relation": {"hidden": 64, "mlp_hidden": 128}}},
    "paper": {"clip": {"frames": 100, "snippet_length": 20}, "crop": {"image_size": 112},
              "encoder": {"backbone": "mc3_18", "heads": 12, "pretrained": None},
              "train_encoder": {"relation": {"hidden": 128, "mlp_hidden": 256, "input_norm": "none"}}},
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_train_step(model, opt, x, y, te, device):
    """One forward + backward + Adam step of the whole loss (Eq. 12) on the fixed batch ``x``, ``y``
    (also used by bench/epoch_speed.py)."""
    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            logits, enc = model(x)
            loss = mrl_loss(logits.float(), y, enc, te.lambda_od, te.lambda_tc)["total"]
        loss.backward()
        opt.step()
    return train_step


def bench(size: str, batch: int, iters: int, device: torch.device, raw: Optional[dict] = None) -> dict:
    p = parse_params(raw or SIZES[size])
    model = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).to(device)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    f, s = p.clip.frames, p.crop.image_size
    x = torch.rand(batch, 3, f, s, s, device=device)
    y = (torch.arange(batch, device=device) % 2).float()
    train_step = make_train_step(model, opt, x, y, p.train_encoder, device)

    def infer_step():
        with torch.no_grad(), autocast(device):
            model(x)

    out = {}
    for name, fn, mode in (("train", train_step, model.train), ("inference", infer_step, model.eval)):
        mode()
        fn()  # warm-up
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(iters):
            fn()
        _sync(device)
        dt = (time.perf_counter() - t) / iters
        out[name] = (batch / dt, dt, (time.process_time() - c) / iters)   # clips/s, wall s, CPU s (all threads)
    return out


def compare_raw(model: str, size: int) -> dict:
    """Demo-size params with backbone ``model`` (``name`` or ``mobilenet_v2:k``) and ``size`` px crops."""
    raw = copy.deepcopy(SIZES["demo"])
    name, _, freeze = model.partition(":")
    raw["encoder"].update(backbone=name, freeze_blocks=int(freeze or 0))
    raw["crop"]["image_size"] = size
    return raw


def compare(models: list[str], sizes: list[int], batch: int, iters: int, repeats: int, device: torch.device,
            train_windows: int, val_windows: int, epochs: int) -> list[dict]:
    """Train/validation seconds per batch of every model x size (fastest of ``repeats`` turns) and the
    seconds of an epoch derived from them."""
    runs = [(m, s) for s in sizes for m in models]
    best: dict = {}
    for turn in range(repeats):
        for m, s in runs:
            r = bench("demo", batch, iters, device, compare_raw(m, s))
            prev = best.get((m, s), {})
            best[(m, s)] = {f"{k}_{i}": min(r[k][j], prev.get(f"{k}_{i}", math.inf))
                            for k in ("train", "inference") for i, j in (("wall", 1), ("cpu", 2))}
            print(f"  turn {turn + 1}/{repeats} {m:16s} {s:3d}px: train {r['train'][1]:.3f} s/step "
                  f"({r['train'][2]:.3f} CPU s), validation {r['inference'][1]:.3f} s/batch "
                  f"({r['inference'][2]:.3f} CPU s)", flush=True)
    rows = []
    steps, val_batches = math.ceil(train_windows / batch), math.ceil(val_windows / batch)
    for m, s in runs:
        b = best[(m, s)]
        row = {"model": m, "size": s, **b}
        for i in ("wall", "cpu"):
            row[f"epoch_{i}"] = steps * b[f"train_{i}"] + val_batches * b[f"inference_{i}"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4, help="demo-size batch")
    ap.add_argument("--iters", type=int, default=3, help="demo-size timed iterations")
    ap.add_argument("--paper-batch", type=int, default=1)
    ap.add_argument("--paper-iters", type=int, default=1)
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--compare", action="store_true", help="backbones x crop sizes at the demo's clip (see above)")
    ap.add_argument("--models", default="small3d,mobilenet_v2:0,mobilenet_v2:7,mobilenet_v2:11")
    ap.add_argument("--sizes", default="64,112", help="crop sizes, px")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-windows", type=int, default=500)
    ap.add_argument("--val-windows", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}")
    if args.compare:
        rows = compare(args.models.split(","), [int(x) for x in args.sizes.split(",")], args.batch, args.iters,
                       args.repeats, device, args.train_windows, args.val_windows, args.epochs)
        print(f"batch {args.batch} windows of 32 frames (T=4, D=8), N=12, {args.threads} thread(s); epoch = "
              f"{args.train_windows} train + {args.val_windows} val windows, compute only; CPU s: process time of "
              f"all threads (on a shared machine the steadier figure)")
        print(f"{'backbone':16s} {'crop':>4s} {'train s/step':>12s} {'CPU s':>7s} {'val s/batch':>11s} {'CPU s':>7s} "
              f"{'s/epoch':>8s} {'CPU s/epoch':>11s} {f'{args.epochs} epochs CPU min':>18s}")
        for r in rows:
            print(f"{r['model']:16s} {r['size']:4d} {r['train_wall']:12.3f} {r['train_cpu']:7.3f} "
                  f"{r['inference_wall']:11.3f} {r['inference_cpu']:7.3f} {r['epoch_wall']:8.1f} "
                  f"{r['epoch_cpu']:11.1f} {r['epoch_cpu'] * args.epochs / 60:18.1f}")
        return 0
    runs = [("demo", "small3d 64px 32 frames (T=4, D=8)", args.batch, args.iters)]
    if not args.skip_paper:
        runs.append(("paper", "mc3_18 112px 100 frames (T=5, D=20)", args.paper_batch, args.paper_iters))
    for size, desc, b, it in runs:
        r = bench(size, b, it, device)
        print(f"{size:5s} {desc:38s} batch {b}: train {r['train'][0]:8.2f} clips/s ({r['train'][1]:.3f} s/step) | "
              f"inference {r['inference'][0]:8.2f} clips/s ({r['inference'][1]:.3f} s/batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
