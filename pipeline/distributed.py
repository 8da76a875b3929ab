"""Data-parallel training under ``torchrun`` (DistributedDataParallel), and nothing at all otherwise.

A stage launched by ``torchrun`` (``python -m torch.distributed.run``) sees WORLD_SIZE / RANK /
LOCAL_RANK in its environment; :func:`init` then joins the process group (NCCL when the stage runs on
CUDA, gloo on CPU) and every helper here becomes collective. Launched normally (no WORLD_SIZE, or 1)
:func:`init` does nothing and every helper is the identity: a single-process run is the run it was
before this module existed.

Semantics kept identical to a single process (see :func:`pipeline.learning.training.fit`):

- ``batch_size`` is the GLOBAL batch. Every rank draws the same per-epoch permutation from the same
  epoch generator; each global batch is cut into ``world`` contiguous, near-equal slices
  (:func:`shard_bounds`), rank r takes slice r. The union of the ranks' batches of one step is the
  single-process batch, and the ranks' epochs together are the single-process epoch.
- Each rank's loss is weighted by ``n_local * world / n_global`` before backward, so DDP's gradient
  average is the mean over the global batch even when the slices are unequal.
- A global batch smaller than ``world`` (a tail) leaves some ranks without a sample: they run one
  stand-in sample with weight 0 so that every rank takes part in every gradient all-reduce.
- Every rank seeds its global torch RNG with the same per-epoch seed (batch-size independent draws,
  such as the random edge mask, are therefore the ones a single process draws).
- Rank 0 alone validates, logs to MLflow and writes checkpoints and outputs; the validation metrics
  are broadcast so every rank keeps the same history.
- BatchNorm: on CUDA the model is converted to SyncBatchNorm, so batch statistics are those of the
  global batch (as in one process). SyncBatchNorm has no CPU kernel: under gloo each rank normalises
  with the statistics of its own slice (exactly what single-process gradient accumulation with
  micro-batches of the same size does), and rank 0's running statistics are kept.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import random
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

__all__ = ["launched", "init", "cleanup", "session", "is_distributed", "rank", "world_size", "local_rank",
           "is_main", "barrier", "all_reduce", "broadcast_object", "device_for", "shard_bounds",
           "shard_batch", "ShardedBatchSampler", "ShardMeta", "wrap", "unwrap", "revert_sync_batchnorm",
           "seed_worker"]

#: Batch keys carrying the shard bookkeeping (global batch size, this rank's offset, real samples).
META_KEYS = ("_gn", "_off", "_n")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched() -> bool:
    """True when started by torchrun with more than one process."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0) if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> bool:
    """Join the process group when launched by torchrun; returns whether the run is distributed.

    ``device`` is the params ``device``: NCCL when it resolves to CUDA, else gloo. The collective
    timeout is ``MRL_DIST_TIMEOUT_MIN`` minutes (default 60: rank 0 validates while the others wait)."""
    if not launched() or not dist.is_available():
        return False
    if dist.is_initialized():
        return is_distributed()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    timeout = datetime.timedelta(minutes=_env_int("MRL_DIST_TIMEOUT_MIN", 60))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
    return is_distributed()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[bool]:
    """``with session(p.device) as ddp:`` init on entry, destroy the process group on exit."""
    started = init(device)
    try:
        yield started
    finally:
        if started:
            cleanup()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(x: Any, op: str = "sum") -> Any:
    """Sum (or ``max``/``min``) a number or tensor over the ranks; identity in a single process.
    Returns the same kind of value it was given (float/int in, float/int out)."""
    if not is_distributed():
        return x
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    t = torch.as_tensor(x, dtype=torch.float64 if not isinstance(x, torch.Tensor) else None)
    orig = t.device
    t = t.detach().clone().to(_comm_device())
    dist.all_reduce(t, op=ops[op])
    if isinstance(x, torch.Tensor):
        return t.to(orig)
    return type(x)(t.item()) if isinstance(x, (int, float)) else t.item()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s (picklable) object on every rank; identity in a single process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def device_for(device: torch.device) -> torch.device:
    """A CUDA device without index means this rank's GPU (LOCAL_RANK) under torchrun."""
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", local_rank())
    return device


# --------------------------------------------------------------------------- sharding
def shard_bounds(n: int, r: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank ``r``'s contiguous slice of ``n`` items (the first ``n % world`` ranks get one more)."""
    base, extra = divmod(n, world)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def shard_batch(indices: Sequence, r: Optional[int] = None, world: Optional[int] = None) -> tuple[list, dict]:
    """This rank's part of one global batch: (local indices, meta dict with ``_gn``, ``_off``, ``_n``).

    ``_n`` is the number of real samples; an empty slice is replaced by the batch's first sample
    with ``_n = 0`` (weight 0) so that the rank still takes part in the gradient all-reduce."""
    r = rank() if r is None else r
    world = world_size() if world is None else world
    idx = list(indices)
    lo, hi = shard_bounds(len(idx), r, world)
    if hi > lo:
        return idx[lo:hi], {"_gn": len(idx), "_off": lo, "_n": hi - lo}
    return idx[:1], {"_gn": len(idx), "_off": 0, "_n": 0}


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Wrap a batch sampler of GLOBAL batches; yield this rank's slice of each one.

    Items are ``(index, global_n, offset, n_real)`` tuples, to be read through :class:`ShardMeta`,
    which adds the three numbers to the sample dict (the training loop weights the loss with them).
    The wrapped sampler is iterated in full on every rank, so it draws from its generator exactly
    what it draws in a single process."""

    def __init__(self, batch_sampler, r: Optional[int] = None, world: Optional[int] = None):
        self.batch_sampler = batch_sampler
        self.r = rank() if r is None else r
        self.world = world_size() if world is None else world

    def __iter__(self):
        for batch in self.batch_sampler:
            local, m = shard_batch(batch, self.r, self.world)
            yield [(i, m["_gn"], m["_off"], m["_n"]) for i in local]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class ShardMeta(torch.utils.data.Dataset):
    """Dataset view for :class:`ShardedBatchSampler`: ``ds[i]`` plus ``_gn``, ``_off``, ``_n``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        i, gn, off, n = item
        out = dict(self.dataset[i])
        out.update(_gn=gn, _off=off, _n=n)
        return out


def batch_meta(batch: dict) -> Optional[tuple[int, int, int]]:
    """(global_n, offset, n_real) of a sharded batch, or None for a single-process batch."""
    if "_gn" not in batch:
        return None
    return tuple(int(batch[k][0]) if isinstance(batch[k], torch.Tensor) and batch[k].ndim else int(batch[k])
                 for k in META_KEYS)


# --------------------------------------------------------------------------- model
def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (SyncBatchNorm first on CUDA; the module's own
    parameters keep training, so the caller's reference stays valid)."""
    if device.type == "cuda":
        _convert_sync_bn_inplace(model)
    kw = {"device_ids": [device.index], "output_device": device.index} if device.type == "cuda" else {}
    # find_unused_parameters: an ablation (no STA, relation cell 'none', ...) can leave parameters
    # without a gradient; the graph walk it costs is small next to a 3D CNN.
    return DDP(model, find_unused_parameters=True, **kw)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(
        model, torch.nn.parallel.DistributedDataParallel) else model


_BN_DIMS = {torch.nn.BatchNorm1d: 1, torch.nn.BatchNorm2d: 2, torch.nn.BatchNorm3d: 3}


def _convert_sync_bn_inplace(model: torch.nn.Module) -> None:
    """BatchNorm{1,2,3}d -> SyncBatchNorm in place, sharing parameters and buffers."""
    for name, child in list(model.named_children()):
        dims = _BN_DIMS.get(type(child))
        if dims is None:
            _convert_sync_bn_inplace(child)
            continue
        sbn = torch.nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
        if child.affine:
            sbn.weight, sbn.bias = child.weight, child.bias
        sbn.running_mean, sbn.running_var = child.running_mean, child.running_var
        sbn.num_batches_tracked = child.num_batches_tracked
        sbn.train(child.training)
        sbn._mrl_dims = dims
        setattr(model, name, sbn)


def revert_sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Replace SyncBatchNorm layers (in place) by plain BatchNorm{1,2,3}d sharing the same parameters
    and buffers, so the trained module pickles and runs on CPU like one trained in a single process."""
    for name, child in list(model.named_children()):
        if isinstance(child, torch.nn.SyncBatchNorm):
            dims = getattr(child, "_mrl_dims", 3)
            cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[dims]
            bn = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(model, name, bn)
        else:
            revert_sync_batchnorm(child)
    return model


# --------------------------------------------------------------------------- data loading
def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python and NumPy from the worker's torch seed (torch itself
    seeds it with base_seed + worker_id, the base seed coming from the loader's generator), so
    workers draw reproducible, distinct streams. Dataset file handles are opened lazily per process
    (ClipDataset, FeatureDataset check the pid), so each worker keeps its own open HDF5 handles for
    its lifetime."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
