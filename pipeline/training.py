"""The training loop shared by train_encoder and train_relation.

One epoch = optimiser steps over the training batches, then validation; the best epoch is chosen on
the VALIDATION split only (video-level AUC, ties broken by the lower validation loss). After every
epoch a checkpoint (model, optimiser, scheduler, history, best state) is written atomically; a run
killed mid-way resumes from the last finished epoch when the checkpoint's params digest matches, and
because every epoch draws its randomness from :func:`pipeline.runtime.epoch_generator` the resumed run
ends exactly where an uninterrupted one would.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.params import OptimParams
from pipeline.runtime import atomic_torch_save, autocast, epoch_generator

__all__ = ["FitResult", "fit", "make_optimizer", "window_predictions", "video_metrics"]

StepFn = Callable[[torch.nn.Module, dict, torch.Generator], dict]


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_metrics: dict
    history: list = field(default_factory=list)
    resumed_from: int = 0


def make_optimizer(model: torch.nn.Module, optim: OptimParams):
    """Adam with the paper's step schedule: lr multiplied by ``lr_gamma`` every ``lr_step`` epochs."""
    opt = torch.optim.Adam(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=optim.lr_step, gamma=optim.lr_gamma)
    return opt, sched


def _better(new: dict, best: Optional[dict]) -> bool:
    if best is None:
        return True
    a, b = new.get("val_auc"), best.get("val_auc")
    a = -1.0 if a is None or (isinstance(a, float) and math.isnan(a)) else a
    b = -1.0 if b is None or (isinstance(b, float) and math.isnan(b)) else b
    if a != b:
        return a > b
    return new.get("val_loss", math.inf) < best.get("val_loss", math.inf)


def fit(
    model: torch.nn.Module,
    *,
    train_batches: Callable[[torch.Generator], Iterable[dict]],
    step: StepFn,
    validate: Callable[[torch.nn.Module], dict],
    optim: OptimParams,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    digest: str,
    log_epoch: Callable[[dict, int], None] = lambda m, e: None,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` for ``optim.epochs`` epochs; return the best (validation) state.

    ``train_batches(gen)`` yields batches for one epoch (shuffled with ``gen``); ``step(model, batch,
    gen)`` returns a dict of scalar loss tensors whose ``total`` is minimised; ``validate(model)``
    returns a dict with ``val_auc``/``val_loss``/... (plain floats)."""
    model.to(device)
    opt, sched = make_optimizer(model, optim)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    history: list = []
    best_state, best_metrics, best_epoch, start = None, None, -1, 0
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if ck.get("digest") == digest and ck.get("epoch", -1) + 1 <= optim.epochs:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            history, best_state = ck["history"], ck["best_state"]
            best_metrics, best_epoch = ck["best_metrics"], ck["best_epoch"]
            start = ck["epoch"] + 1
            print(f"{desc}: resuming after epoch {ck['epoch'] + 1}/{optim.epochs} from {checkpoint}")
        else:
            print(f"{desc}: ignoring checkpoint {checkpoint} (written for other params)")
    for epoch in range(start, optim.epochs):
        t0 = time.time()
        gen = epoch_generator(seed, epoch)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # masking draws etc.
        model.train()
        sums: dict = {}
        n = 0
        opt.zero_grad(set_to_none=True)
        bar = tqdm(train_batches(gen), desc=f"{desc} {epoch + 1}/{optim.epochs}", leave=False)
        for i, batch in enumerate(bar):
            with autocast(device):
                losses = step(model, batch, gen)
            scaler.scale(losses["total"] / optim.grad_accum).backward()
            if (i + 1) % optim.grad_accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            bs = int(batch["label"].shape[0])
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * bs
            n += bs
            bar.set_postfix(loss=f"{sums['total'] / n:.4f}")
        if n and (i + 1) % optim.grad_accum:  # flush a last partial accumulation
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        metrics = {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
        model.eval()
        with torch.no_grad():
            metrics.update(validate(model))
        metrics.update(epoch=epoch + 1, lr=lr, seconds=round(time.time() - t0, 3))
        history.append(metrics)
        if _better(metrics, best_metrics):
            best_metrics, best_epoch = dict(metrics), epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        log_epoch(metrics, epoch + 1)
        print(f"{desc} epoch {epoch + 1}/{optim.epochs}: " + ", ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "seconds"))
        atomic_torch_save({
            "digest": digest, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "history": history, "best_state": best_state,
            "best_metrics": best_metrics, "best_epoch": best_epoch,
        }, checkpoint)
    if best_state is None:
        raise RuntimeError(f"{desc}: no epoch was trained (epochs={optim.epochs})")
    return FitResult(best_state, best_epoch, best_metrics, history, start)


def window_predictions(keys: pd.DataFrame, logits: Iterable[torch.Tensor]) -> pd.DataFrame:
    """Attach window-level fake probabilities (sigmoid of the logits) to the key table."""
    probs = torch.cat([torch.as_tensor(x).float().reshape(-1) for x in logits]).sigmoid().numpy()
    out = keys.reset_index(drop=True).copy()
    if len(out) != len(probs):
        raise ValueError(f"{len(out)} keys but {len(probs)} predictions")
    out["prob"] = probs.astype(np.float64)
    return out


def video_metrics(windows: pd.DataFrame, threshold: float = 0.5, prefix: str = "val_") -> dict:
    """Video-level AUC/ACC/EER/AP of window predictions (a video's score = mean over its windows)."""
    from pipeline.metrics import binary_metrics, video_scores

    vids = video_scores(windows)
    m = binary_metrics(vids["label"].to_numpy(), vids["score"].to_numpy(), threshold)
    return {f"{prefix}{k}": (float(v) if v is not None else float("nan"))
            for k, v in m.items() if k in ("auc", "acc", "eer", "ap")}
