"""Encoding every crop window into per-snippet vertices: the library behind the ``cache_features`` stage.

The output (see :mod:`feature_cache`) holds vertices [W, T, N, C] with labels and (dataset, method,
video_id, window) keys for all splits; its attributes carry the schema version, the SHA-256 of the encoder
file and the encoder params, so a reader refuses a cache made by another encoder. Windows are encoded in
evaluation mode without augmentation. :func:`cache_feature_maps` also keeps the backbone maps ``F_0`` of the
windows Grad-CAM explains (:mod:`feature_cache.maps`), so that ``evaluate`` does not run the backbone again.

Sharding: ``shard=(i, n)`` encodes the videos at positions ``i-1 (mod n)`` (in index order; all windows of a
video in one shard) into :func:`shard_path`. :func:`merge_shards` checks every shard (schema, checksum, same
encoder) and writes the single file in the order of the single run (train, val, test; crop-index order
within a split), so the merged file holds exactly the windows, keys and values a single run writes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from feature_cache import FeatureCacheWriter, open_cache
from feature_cache.maps import write_feature_maps
from pipeline.ingest.clips import ClipDataset, clip_to_tensor, window_loader
from pipeline import distributed as dist
from pipeline.model_io import load_encoder
from pipeline.runtime import resolve_device, seed_everything, sha256_file
from pipeline.scoring.explain import masked_fake_batches, window_key
from pipeline.scoring.inference import encode_clips

SPLITS = ("train", "val", "test")
_VIDEO = ["dataset", "method", "video_id"]
_KEY = _VIDEO + ["window"]


def shard_path(out: Path, i: int, n: int) -> Path:
    """``data/features.h5`` -> ``data/features.shard-i-of-n.h5``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{i}-of-{n}{out.suffix}")


def shard_rows(index: pd.DataFrame, i: int, n: int, videos: Optional[list] = None) -> list[int]:
    """Rows of ``index`` (a crop index) whose video is at position ``i-1 (mod n)`` of ``videos``
    (default: the videos of ``index`` in order of first appearance)."""
    vid = list(index[_VIDEO].astype(str).itertuples(index=False, name=None))
    if videos is None:
        videos = list(dict.fromkeys(vid))
    pos = {v: k for k, v in enumerate(videos)}
    return [r for r, v in enumerate(vid) if pos[v] % n == i - 1]


def _all_videos(crop_dir: str) -> list:
    idx = ClipDataset(crop_dir).index
    return list(dict.fromkeys(idx[_VIDEO].astype(str).itertuples(index=False, name=None)))


@torch.no_grad()
def cache_features(crop_dir: str, encoder_path: Path, out: Path, *, seed: int, device: str, batch_size: int,
                   num_workers: int, shard: Optional[tuple[int, int]] = None) -> dict:
    """Encode every window (or, with ``shard=(i, n)``, the windows of every n-th video from the i-th,
    written to :func:`shard_path`), ``batch_size`` windows at a time read by ``num_workers`` loader processes
    (the stage passes ``train_encoder.batch_size`` and ``train_encoder.num_workers``)."""
    seed_everything(seed)
    device = dist.device_for(resolve_device(device))
    if shard is not None:
        out = shard_path(out, *shard)
        videos = _all_videos(crop_dir)
    encoder, meta = load_encoder(encoder_path, device)
    t0 = time.time()
    n = 0
    T, N, C = meta["clip"]["frames"] // meta["clip"]["snippet_length"], meta["heads"], meta["out_dim"]
    params = {"encoder": meta["encoder"], "clip": meta["clip"], "image_size": meta["image_size"],
              "encoder_file": str(encoder_path)}
    with FeatureCacheWriter(out, n_snippets=T, n_vertices=N, dim=C,
                            encoder_sha256=sha256_file(encoder_path), params=params) as writer:
        for split in SPLITS:
            subset = None
            if shard is not None:
                ds = ClipDataset(crop_dir, split=split)
                subset = torch.utils.data.Subset(ds, shard_rows(ds.index, *shard, videos=videos))
            loader = window_loader(crop_dir, split, batch_size, num_workers, dataset=subset)
            for batch in tqdm(loader, desc=f"cache_features {split}", leave=False, disable=not dist.is_main()):
                v = encode_clips(encoder, batch["clip"], device, batch_size=len(batch["clip"]))
                keys = list(zip(batch["dataset"], batch["method"], batch["video_id"],
                                [int(w) for w in batch["window"]]))
                writer.add(v, [int(x) for x in batch["label"]], keys, [split] * len(keys))
                n += len(keys)
    if n == 0 and shard is None:
        raise RuntimeError(f"{crop_dir}: no windows to encode")
    return {"windows": n, "shape": [T, N, C], "seconds": round(time.time() - t0, 1), "out": str(out)}


@torch.no_grad()
def cache_feature_maps(crop_dir: str, encoder_path: Path, out: Path, *, device: str, split: str = "test",
                       batch_size: int = 4) -> dict:
    """The backbone maps ``F_0`` of the windows Grad-CAM explains (the fake windows of ``split`` that carry
    masks, :func:`pipeline.scoring.explain.masked_fake_batches`) -> ``out`` (:mod:`feature_cache.maps`), read in
    the batches of ``evaluate``'s localisation, so that the maps are the ones it computed from the clips."""
    device = resolve_device(device)
    encoder, _ = load_encoder(encoder_path, device)
    encoder.eval()
    t0 = time.time()
    ds = ClipDataset(crop_dir, split=split, with_masks=True)
    maps, keys = [], []
    try:
        for batch in masked_fake_batches(ds, batch_size):
            f0 = encoder.feature_map(clip_to_tensor(torch.stack([b["clip"] for b in batch])).to(device))
            maps.append(f0.reshape(len(batch), -1, *f0.shape[1:]).float().cpu().numpy())
            keys += [window_key(b) for b in batch]
    finally:
        ds.close()
    arr = np.concatenate(maps) if maps else np.zeros((0, 1, 1, 1, 1, 1), np.float32)
    write_feature_maps(out, arr, keys, sha256_file(encoder_path), split)
    return {"windows": len(keys), "shape": list(arr.shape[1:]), "seconds": round(time.time() - t0, 1),
            "out": str(out)}


def merge_shards(out: Path, n: int, crop_dir: Optional[str] = None, keep: bool = False,
                 block: int = 256) -> dict:
    """Concatenate ``shard_path(out, 1..n, n)`` into ``out`` in the single run's order.

    The order (and the check that no window is missing or extra) comes from the crop index when
    ``crop_dir`` has one, else it is (split: train, val, test; key). Every shard is opened with its
    checksum verified and must come from the same encoder with the same params."""
    t0 = time.time()
    paths = [shard_path(out, i, n) for i in range(1, n + 1)]
    missing = [str(q) for q in paths if not q.exists()]
    if missing:
        raise FileNotFoundError(f"merge: missing shard file(s) {missing}; run cache_features --shard i/{n} for each")
    infos = [open_cache(q, verify=True) for q in paths]
    ref = infos[0]
    for q, info in zip(paths, infos):
        if (info.encoder_sha256, info.params, info.shape) != (ref.encoder_sha256, ref.params, ref.shape):
            raise ValueError(f"merge: {q} was written by another encoder or params than {paths[0]}")
    keys = pd.concat([info.keys.assign(_shard=s, _row=np.arange(len(info.keys)))
                      for s, info in enumerate(infos)], ignore_index=True)
    keys["window"] = keys["window"].astype(np.int64)
    dup = keys.duplicated(_KEY, keep=False)
    if dup.any():
        raise ValueError(f"merge: windows present in more than one shard, e.g. {keys[dup].iloc[0][_KEY].tolist()}")
    index_csv = Path(crop_dir) / "index.csv" if crop_dir else None
    if index_csv is not None and index_csv.exists():
        want = pd.concat([ClipDataset(crop_dir, split=sp).index.assign(split=sp) for sp in SPLITS],
                         ignore_index=True)[_KEY + ["split"]]
        want = want.astype({"dataset": str, "method": str, "video_id": str, "window": np.int64})
        order = want.merge(keys, on=_KEY + ["split"], how="left", indicator=True)
        lost = order[order["_merge"] != "both"]
        if len(lost) or len(order) != len(keys):
            example = lost.iloc[0][_KEY].tolist() if len(lost) else "(extra windows in the shards)"
            raise ValueError(f"merge: the shards hold {len(keys)} windows, the crop index {len(want)}; "
                             f"e.g. missing {example}")
    else:
        rank = {sp: k for k, sp in enumerate(SPLITS)}
        order = keys.assign(_sp=keys["split"].map(rank)).sort_values(["_sp"] + _KEY, kind="stable")
    order = order.reset_index(drop=True)
    with FeatureCacheWriter(out, *ref.shape, encoder_sha256=ref.encoder_sha256, params=ref.params,
                            expected_windows=len(order)) as writer:
        for lo in range(0, len(order), block):
            part = order.iloc[lo:lo + block]
            v = np.empty((len(part),) + ref.shape, np.float32)
            for s, grp in part.groupby("_shard", sort=True):
                pos = np.flatnonzero(part["_shard"].to_numpy() == s)
                v[pos] = infos[int(s)].read_vertices(grp["_row"].to_numpy())
            writer.add(v, part["label"].to_numpy(), list(part[_KEY].itertuples(index=False, name=None)),
                       part["split"].tolist())
    if not keep:
        for q in paths:
            q.unlink()
    return {"windows": len(order), "shards": n, "shape": list(ref.shape), "seconds": round(time.time() - t0, 1)}
