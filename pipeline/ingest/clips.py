"""Reader of the ``crop`` stage output: a torch Dataset over the windows listed in ``index.csv``.

``ClipDataset(crop_dir_or_index_csv, split="train")[i]`` ->
``dict(clip=uint8 tensor [F, S, S, 3], label=int, dataset, method, video_id, window)``.
HDF5 files are opened lazily and per process, so it works with ``DataLoader(num_workers > 0)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from pipeline import distributed as dist

__all__ = ["ClipDataset", "EpochShuffle", "PairedShuffle", "clip_to_tensor", "clip_batch_to_input", "window_loader"]


def clip_to_tensor(clip) -> torch.Tensor:
    """uint8 ``[F, S, S, 3]`` (or batched ``[B, F, S, S, 3]``) -> float ``[3, F, S, S]`` (``[B, 3, F, S, S]``)
    in [0, 1]."""
    x = torch.as_tensor(np.asarray(clip) if not isinstance(clip, torch.Tensor) else clip)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if x.ndim == 4:
        return x.permute(3, 0, 1, 2).contiguous()
    if x.ndim == 5:
        return x.permute(0, 4, 1, 2, 3).contiguous()
    raise ValueError(f"clip_to_tensor expects [F,S,S,3] or [B,F,S,S,3], got shape {tuple(x.shape)}")


class ClipDataset(Dataset):
    """Windows of face crops. ``source``: the crop folder (holding ``index.csv``) or the index CSV itself."""

    def __init__(self, source: str | Path, split: Optional[str] | list[str] = None,
                 transform: Optional[Callable] = None, with_masks: bool = False, with_landmarks: bool = False):
        source = Path(source)
        index_csv = source / "index.csv" if source.is_dir() else source
        if not index_csv.exists():
            raise FileNotFoundError(f"{index_csv}: crop index not found (run the crop stage)")
        self.root = index_csv.parent
        df = pd.read_csv(index_csv, dtype={"dataset": str, "method": str, "video_id": str, "split": str,
                                           "identity": str, "file": str}, keep_default_na=False)
        if split is not None:
            splits = [split] if isinstance(split, str) else list(split)
            df = df[df["split"].isin(splits)]
        self.index = df.reset_index(drop=True)
        self.transform = transform
        self.with_masks = with_masks
        self.with_landmarks = with_landmarks
        self._files: dict[str, h5py.File] = {}
        self._pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"].to_numpy(dtype=np.int64)

    def _file(self, rel: str) -> h5py.File:
        if self._pid != os.getpid():  # forked worker: never reuse the parent's handles
            self._files = {}
            self._pid = os.getpid()
        f = self._files.get(rel)
        if f is None:
            f = h5py.File(self.root / rel, "r")
            self._files[rel] = f
        return f

    def __getitem__(self, i: int) -> dict:
        r = self.index.iloc[int(i)]
        f = self._file(r["file"])
        w = int(r["window"])
        clip = torch.from_numpy(np.ascontiguousarray(f["clips"][w]))
        if self.transform is not None:
            clip = self.transform(clip)
        item = {"clip": clip, "label": int(r["label"]), "dataset": r["dataset"], "method": r["method"],
                "video_id": r["video_id"], "window": w}
        if self.with_masks and "masks" in f:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(f["masks"][w]))
        if self.with_landmarks and "landmarks" in f:
            item["landmarks"] = torch.from_numpy(np.ascontiguousarray(f["landmarks"][w]))
        return item

    def close(self) -> None:
        for f in getattr(self, "_files", {}).values():  # also when __init__ failed before _files existed
            try:
                f.close()
            except Exception:
                pass
        self._files = {}

    def __getstate__(self):  # picklable for spawn-based workers
        d = self.__dict__.copy()
        d["_files"] = {}
        d["_pid"] = None
        return d

    def __del__(self):
        self.close()


def clip_batch_to_input(clips: torch.Tensor, device: torch.device, flip: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [B, F, S, S, 3] -> float [B, 3, F, S, S] in [0, 1]; ``flip`` [B] bool mirrors horizontally.

    Normalisation (mean/std) happens inside the encoder, identically for training and test."""
    x = clips.to(device, non_blocking=True).permute(0, 4, 1, 2, 3).float().div_(255.0)
    if flip is not None and bool(flip.any()):
        f = flip.to(device, non_blocking=True)
        x[f] = x[f].flip(-1)
    return x


class EpochShuffle(Sampler[int]):
    """A random order of ``n`` items drawn from the generator of the current epoch (:meth:`set_generator`),
    so that ONE DataLoader, and its persistent worker processes with their open HDF5 handles, serves every
    epoch. It takes from ``gen`` what a fresh ``DataLoader(shuffle=True, generator=gen)`` takes (one int64,
    that loader's worker base seed, then :class:`~torch.utils.data.RandomSampler`'s permutations), but all
    of it when the epoch starts: the epoch's later draws (flips, ...) then never depend on how far the workers
    prefetch, and any ``num_workers >= 1`` trains the same weights. (The per-epoch loader used with 0 workers
    draws its last permutation only when exhausted, after the epoch's steps, so its runs differ from these.)"""

    def __init__(self, n: int):
        self.n = int(n)
        self.gen: Optional[torch.Generator] = None

    def set_generator(self, gen: torch.Generator) -> None:
        self.gen = gen

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.gen is None:
            raise RuntimeError("EpochShuffle: set_generator(epoch generator) before iterating")
        torch.empty((), dtype=torch.int64).random_(generator=self.gen)  # the per-epoch loader's base-seed draw
        return iter(list(RandomSampler(range(self.n), generator=self.gen)))


class PairedShuffle(EpochShuffle):
    """A random order in which every fake window comes right after a real window of the same person.

    Within each identity the real and the fake windows are shuffled and zipped into (real, fake) pairs;
    the pairs and the windows left over (an identity with more reals than fakes, say) are then shuffled
    as units, so an even batch holds whole pairs. A batch then shows the model the same face with and
    without a manipulation, and the identity alone no longer tells them apart: the gradient has to come
    from the manipulation. Everything is drawn from the epoch generator when the epoch starts, as in
    :class:`EpochShuffle`. ``index``: the dataset's index (columns ``identity`` and ``label``)."""

    def __init__(self, index: pd.DataFrame):
        missing = {"identity", "label"} - set(index.columns)
        if missing:
            raise ValueError(f"PairedShuffle needs the crop index columns {sorted(missing)}")
        super().__init__(len(index))
        groups = index.reset_index(drop=True).groupby(index["identity"].to_numpy(), sort=True).indices
        labels = index["label"].to_numpy()
        self.groups = [(g[labels[g] == 0], g[labels[g] == 1]) for _, g in sorted(groups.items())]

    def __iter__(self):
        if self.gen is None:
            raise RuntimeError("PairedShuffle: set_generator(epoch generator) before iterating")
        units: list[list[int]] = []
        for reals, fakes in self.groups:
            r = reals[torch.randperm(len(reals), generator=self.gen).numpy()].tolist()
            f = fakes[torch.randperm(len(fakes), generator=self.gen).numpy()].tolist()
            k = min(len(r), len(f))
            units += [[a, b] for a, b in zip(r[:k], f[:k])] + [[i] for i in r[k:] + f[k:]]
        order = torch.randperm(len(units), generator=self.gen).tolist()
        return iter([i for u in order for i in units[u]])


def window_loader(crop_dir: str, split: str, batch_size: int, num_workers: int,
                  shuffle_gen: torch.Generator | None = None, *, shard: bool = False,
                  persistent: bool = False, dataset=None, sampler: Optional[Sampler] = None,
                  pin_memory: bool = False, prefetch_factor: Optional[int] = None) -> DataLoader:
    """A DataLoader over the crop windows of ``split``.

    ``shuffle_gen``: shuffle with this generator (the epoch generator). ``shard`` (under torchrun):
    ``batch_size`` is the global batch and this rank gets its slice of each one
    (:class:`pipeline.distributed.ShardedBatchSampler`; the permutation is drawn from ``shuffle_gen``
    exactly as the single-process loader draws it). ``persistent``: keep the worker processes (and
    their open HDF5 handles) between passes, for a loader iterated every epoch. ``dataset``: an
    already-built dataset (a ``Subset`` of windows, say) instead of the ``split`` of ``crop_dir``.
    ``sampler``: the order (an :class:`EpochShuffle` for a persistent training loader); the loader then gets
    a private generator so that it never draws from torch's global one. ``pin_memory``: page-locked batches
    for asynchronous (``non_blocking``) copies to the GPU (pass it only for a CUDA device).
    ``prefetch_factor``: batches each worker loads ahead (torch's default 2 when None)."""
    ds = ClipDataset(crop_dir, split=split) if dataset is None else dataset
    workers = {"num_workers": num_workers, "worker_init_fn": dist.seed_worker if num_workers else None,
               "persistent_workers": bool(persistent and num_workers), "pin_memory": bool(pin_memory)}
    if num_workers and prefetch_factor:
        workers["prefetch_factor"] = int(prefetch_factor)
    if shard and dist.is_distributed():
        base = sampler if sampler is not None else (
            RandomSampler(ds, generator=shuffle_gen) if shuffle_gen is not None else SequentialSampler(ds))
        batches = dist.ShardedBatchSampler(BatchSampler(base, batch_size, drop_last=False))
        return DataLoader(dist.ShardMeta(ds), batch_sampler=batches, generator=shuffle_gen, **workers)
    if sampler is not None:
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, generator=torch.Generator().manual_seed(0),
                          **workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle_gen is not None, generator=shuffle_gen, **workers)
