"""DVC stage ``cache_features``: run the trained encoder over every window, store per-snippet vertices.

The output ``data/features.h5`` (see :mod:`feature_cache`) holds vertices [W, T, N, C] with labels and
(dataset, method, video_id, window) keys for all splits; its attributes carry the schema version, the
SHA-256 of ``models/encoder.pt`` and the encoder params, so a reader refuses a cache made by another
encoder. Windows are encoded in evaluation mode without augmentation.

    python -m pipeline.cache_features [--params params.yaml]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.params import Params, load_params
from pipeline.runtime import autocast, resolve_device, seed_everything
from pipeline.train_encoder import OUT_MODEL, clip_batch_to_input, window_loader

OUT = Path("data/features.h5")


@torch.no_grad()
def cache_features(p: Params, crop_dir: str, encoder_path: Path = OUT_MODEL, out: Path = OUT) -> dict:
    from feature_cache import FeatureCacheWriter, sha256_file
    from pipeline.model_io import load_encoder

    seed_everything(p.seed)
    device = resolve_device(p.device)
    encoder, meta = load_encoder(encoder_path, device)
    t0 = time.time()
    n = 0
    T, N, C = meta["clip"]["frames"] // meta["clip"]["snippet_length"], meta["heads"], meta["out_dim"]
    params = {"encoder": meta["encoder"], "clip": meta["clip"], "image_size": meta["image_size"],
              "encoder_file": str(encoder_path)}
    with FeatureCacheWriter(out, n_snippets=T, n_vertices=N, dim=C,
                            encoder_sha256=sha256_file(encoder_path), params=params) as writer:
        for split in ("train", "val", "test"):
            loader = window_loader(crop_dir, split, p.train_encoder.batch_size, p.train_encoder.num_workers)
            for batch in tqdm(loader, desc=f"cache_features {split}", leave=False):
                with autocast(device):
                    v = encoder(clip_batch_to_input(batch["clip"], device)).vertices
                keys = list(zip(batch["dataset"], batch["method"], batch["video_id"],
                                [int(w) for w in batch["window"]]))
                writer.add(v.float().cpu(), [int(x) for x in batch["label"]], keys, [split] * len(keys))
                n += len(keys)
    if n == 0:
        raise RuntimeError(f"{crop_dir}: no windows to encode")
    return {"windows": n, "shape": [T, N, C], "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    s = cache_features(p, p.crop.out_dir)
    print(f"cache_features: {s['windows']} windows x {s['shape']} vertices in {s['seconds']} s -> {OUT}")


if __name__ == "__main__":
    main()
