"""Encoder throughput (clips/s), training (forward + backward + Adam step) and inference (no_grad, eval),
at the demo size (small3d, 64 px, 32 frames) and the paper size (mc3_18, 112 px, 100 frames).

    python bench/encoder_speed.py [--threads 2] [--device cpu] [--batch 4] [--paper-iters 1] [--skip-paper]

The whole MRL model of the train_encoder stage is timed (backbone + STA + its relation head + Eq. 12
loss). On CPU the paper size costs ~25 s per forward+backward of ONE clip, so it runs --paper-iters
iterations of batch 1 after one warm-up. On CUDA it runs with the stages' mixed precision.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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


def bench(size: str, batch: int, iters: int, device: torch.device) -> dict:
    p = parse_params(SIZES[size])
    model = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
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
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        dt = (time.perf_counter() - t) / iters
        out[name] = (batch / dt, dt)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4, help="demo-size batch")
    ap.add_argument("--iters", type=int, default=3, help="demo-size timed iterations")
    ap.add_argument("--paper-batch", type=int, default=1)
    ap.add_argument("--paper-iters", type=int, default=1)
    ap.add_argument("--skip-paper", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}")
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
