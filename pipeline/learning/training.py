"""The training loop shared by train_encoder and train_relation.

One epoch = optimiser steps over the training batches, then validation; the best epoch is chosen on
the VALIDATION split only (video-level AUC, ties broken by the lower validation loss). After every
epoch a checkpoint (model, optimiser, scheduler, history, best state) is written atomically; a run
killed mid-way resumes from the last finished epoch when the checkpoint's params digest matches, and
because every epoch draws its randomness from :func:`pipeline.runtime.epoch_generator` the resumed run
ends exactly where an uninterrupted one would.

Under ``torchrun`` (:mod:`pipeline.distributed`) the same loop trains a DistributedDataParallel copy on
every rank: ``train_batches`` yields this rank's slice of each global batch (with the ``_gn``/``_off``/
``_n`` bookkeeping of :func:`pipeline.distributed.shard_batch`), each rank's loss is weighted so the
averaged gradient is the global-batch mean, gradients are all-reduced only at optimiser steps
(``no_sync`` in between), the training sums are all-reduced, rank 0 validates (metrics broadcast) and
rank 0 alone logs and writes the checkpoint. Outside torchrun nothing of this runs.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from tqdm import tqdm

from pipeline import distributed as dist
from pipeline.params import OptimParams
from pipeline.runtime import atomic_torch_save, autocast, epoch_generator

__all__ = ["FitResult", "fit", "make_optimizer", "read_checkpoint"]

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
    ddp = dist.is_distributed()
    main = dist.is_main()
    say = print if main else (lambda *a, **k: None)
    ck = read_checkpoint(checkpoint, say, desc) if checkpoint.exists() else None
    if ck is not None:
        if ck.get("digest") == digest and ck.get("epoch", -1) + 1 >= optim.epochs:
            say(f"{desc}: {checkpoint} is a finished run of the same params and data; training again from "
                f"scratch (a forced re-run, e.g. dvc repro -f, means: train again)")
        elif ck.get("digest") == digest and ck.get("epoch", -1) + 1 < optim.epochs:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            history, best_state = ck["history"], ck["best_state"]
            best_metrics, best_epoch = ck["best_metrics"], ck["best_epoch"]
            start = ck["epoch"] + 1
            say(f"{desc}: resuming after epoch {ck['epoch'] + 1}/{optim.epochs} from {checkpoint}")
        else:
            say(f"{desc}: ignoring checkpoint {checkpoint} (written for other params)")
    if ddp:
        lo, hi = dist.all_reduce(start, "min"), dist.all_reduce(start, "max")
        if lo != hi:
            raise RuntimeError(f"{desc}: ranks disagree on the epoch to resume from ({lo} vs {hi}); "
                               f"{checkpoint} must be on a file system shared by all ranks")
        net = dist.wrap(model, device)
    for epoch in range(start, optim.epochs):
        t0 = time.time()
        gen = epoch_generator(seed, epoch)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # masking draws etc.
        for m in model.modules():  # per-epoch state, e.g. the epoch's edge mask (mask.schedule: epoch)
            if callable(getattr(m, "new_epoch", None)):
                m.new_epoch()
        model.train()
        sums: dict = {}
        n = 0
        opt.zero_grad(set_to_none=True)
        if ddp:
            sums, n = _ddp_epoch(net, train_batches(gen), step, gen, optim, opt, scaler, device,
                                 f"{desc} {epoch + 1}/{optim.epochs}", main)
        else:
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
        if main:
            with torch.no_grad():
                val = validate(model)
        else:
            val = None
        metrics.update(dist.broadcast_object(val) if ddp else val)
        metrics.update(epoch=epoch + 1, lr=lr, seconds=round(time.time() - t0, 3))
        history.append(metrics)
        if _better(metrics, best_metrics):
            best_metrics, best_epoch = dict(metrics), epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if main:
            log_epoch(metrics, epoch + 1)
            print(f"{desc} epoch {epoch + 1}/{optim.epochs}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "seconds"))
            atomic_torch_save({
                "digest": digest, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "history": history, "best_state": best_state,
                "best_metrics": best_metrics, "best_epoch": best_epoch,
            }, checkpoint)
    if ddp:
        dist.revert_sync_batchnorm(model)
        dist.barrier()
    if best_state is None:
        raise RuntimeError(f"{desc}: no epoch was trained (epochs={optim.epochs})")
    return FitResult(best_state, best_epoch, best_metrics, history, start)


def read_checkpoint(path: Path, say: Callable = print, desc: str = "train") -> Optional[dict]:
    """A training checkpoint, loaded with ``torch.load(weights_only=True)``: tensors and plain Python
    values only, so a file planted in the run folder cannot run code. A file that does not load (truncated,
    corrupt, or a pickle with code in it) is moved aside to ``<name>.bad-<n>`` with a message naming it,
    and training starts fresh (None)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or "model" not in ck or "epoch" not in ck:
            raise ValueError("not a training checkpoint of this project (no 'model'/'epoch')")
        return ck
    except Exception as exc:  # noqa: BLE001 - any unreadable file is set aside, never fatal
        n = 1
        while path.with_name(f"{path.name}.bad-{n}").exists():
            n += 1
        aside = path.with_name(f"{path.name}.bad-{n}")
        os.replace(path, aside)
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        say(f"{desc}: could not load checkpoint {path} ({type(exc).__name__}: {reason}); moved it to {aside} "
            f"and starting from scratch")
        return None


def _ddp_epoch(net, batches, step: StepFn, gen, optim: OptimParams, opt, scaler, device, desc: str,
               main: bool) -> tuple[dict, int]:
    """One training epoch of a DistributedDataParallel model; returns the all-reduced (sums, n).

    Every rank gets the same number of batches (one slice of each global batch); the loss of a slice
    of ``_n`` real samples out of ``_gn`` is weighted ``_n * world / _gn`` so that DDP's average is the
    global-batch mean. When the number of batches is known (a DataLoader), gradients are all-reduced
    only on the micro-batch that ends an accumulation (``no_sync`` before); otherwise on every
    micro-batch (the same sum, more messages). The iterable is never read ahead: a sampler drawing
    from the epoch generator when it is exhausted must draw at the same point as in one process."""
    world = dist.world_size()
    total = len(batches) if hasattr(batches, "__len__") else None
    sums: dict = {}
    n = 0
    i = -1
    bar = tqdm(batches, desc=desc, leave=False, disable=not main)
    for i, batch in enumerate(bar):
        meta = dist.batch_meta(batch)
        if meta is None:
            raise RuntimeError("under torchrun, train_batches must yield sharded batches "
                               "(pipeline.distributed.shard_batch / ShardedBatchSampler)")
        gn, _, n_real = meta
        boundary = (i + 1) % optim.grad_accum == 0 or (total is not None and i + 1 == total)
        with (contextlib.nullcontext() if boundary or total is None else net.no_sync()):
            with autocast(device):
                losses = step(net, batch, gen)
            scaler.scale(losses["total"] * (n_real * world / gn) / optim.grad_accum).backward()
        if boundary:
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n_real
        n += n_real
    if i >= 0 and not ((i + 1) % optim.grad_accum == 0 or (total is not None and i + 1 == total)):
        scaler.step(opt)  # a last partial accumulation (gradients already all-reduced)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    keys = sorted(sums)
    tot = dist.all_reduce(torch.tensor([sums[k] for k in keys] + [float(n)], dtype=torch.float64))
    return {k: float(tot[j]) for j, k in enumerate(keys)}, int(tot[-1])
