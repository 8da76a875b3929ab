"""DVC stage ``cache_features``: the trained encoder over every crop window -> ``data/features.h5``.

    python -m pipeline.stages.cache_features [--params params.yaml]
    python -m pipeline.stages.cache_features --shard i/n        # one of n independent jobs (Slurm array task i)
    python -m pipeline.stages.cache_features --merge --shards n # then: concatenate the n shards
    torchrun --nproc_per_node 4 -m pipeline.stages.cache_features   # rank r = shard r+1/4, rank 0 merges

The work is :mod:`pipeline.scoring.features`; shard files are removed after a successful merge
(``--keep-shards`` keeps them). The single run and the merge also write ``data/feature_maps.h5``, the backbone
maps of the windows ``evaluate``'s Grad-CAM explains (:func:`~pipeline.scoring.features.cache_feature_maps`).
"""
from __future__ import annotations

import argparse

from pipeline import paths
from pipeline import distributed as dist
from pipeline.params import load_params
from pipeline.runtime import exit_now, parse_shard
from pipeline.scoring.features import cache_feature_maps, cache_features, merge_shards

OUT = paths.FEATURES


def write_maps(crops: str, device: str) -> None:
    m = cache_feature_maps(crops, paths.ENCODER, paths.FEATURE_MAPS, device=device)
    print(f"cache_features: backbone maps of {m['windows']} windows Grad-CAM explains x {m['shape']} in "
          f"{m['seconds']} s -> {m['out']}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--shard", type=parse_shard, default=None, help="i/n: encode every n-th video from the i-th")
    ap.add_argument("--merge", action="store_true", help=f"concatenate the shards into {OUT}")
    ap.add_argument("--shards", type=int, default=None, help="n for --merge (default: the n of --shard)")
    ap.add_argument("--keep-shards", action="store_true", help="do not delete the shard files after --merge")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    crops = p.crop.out_dir
    section = dict(seed=p.seed, device=p.device, batch_size=p.train_encoder.batch_size,
                   num_workers=p.train_encoder.num_workers)
    if dist.launched() and args.shard is None and not args.merge:  # torchrun: one shard per rank
        with dist.session(p.device):
            s = cache_features(crops, paths.ENCODER, OUT, **section, shard=(dist.rank() + 1, dist.world_size()))
            print(f"cache_features rank {dist.rank()}: {s['windows']} windows in {s['seconds']} s -> {s['out']}")
            dist.barrier()
            if dist.is_main():
                m = merge_shards(OUT, dist.world_size(), crops, keep=args.keep_shards)
                print(f"cache_features: merged {m['shards']} shards, {m['windows']} windows -> {OUT}")
                write_maps(crops, p.device)
            dist.barrier()
        return
    if args.shard is not None:
        s = cache_features(crops, paths.ENCODER, OUT, **section, shard=args.shard)
        print(f"cache_features shard {args.shard[0]}/{args.shard[1]}: {s['windows']} windows in {s['seconds']} s "
              f"-> {s['out']}")
    if args.merge:
        n = args.shards or (args.shard[1] if args.shard else None)
        if not n:
            ap.error("--merge needs --shards n (or --shard i/n)")
        m = merge_shards(OUT, n, crops, keep=args.keep_shards)
        print(f"cache_features: merged {m['shards']} shards, {m['windows']} windows x {m['shape']} in "
              f"{m['seconds']} s -> {OUT}")
        write_maps(crops, p.device)
    if args.shard is None and not args.merge:
        s = cache_features(crops, paths.ENCODER, OUT, **section)
        print(f"cache_features: {s['windows']} windows x {s['shape']} vertices in {s['seconds']} s -> {OUT}")
        write_maps(crops, p.device)


if __name__ == "__main__":
    exit_now(main())
