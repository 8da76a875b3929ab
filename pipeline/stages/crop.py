"""DVC stage ``crop``: MTCNN face tracks of every manifest video, cut into windows of ``clip.frames`` frames.

Reads ``data/manifest.csv``; writes one HDF5 file per video under ``data/crops/<dataset>/<method>/``, plus
``index.csv`` (one row per window) and ``report.json`` (frames read, frames with a face, skipped videos and
why). Up-to-date outputs are reused, so an interrupted run resumes; one broken video is skipped and recorded.
A video the system cannot read now (permissions, I/O) is not cached: the stage crops all the others, then
fails naming it, so the next ``dvc repro`` runs the stage again and tries it again. ``data/crops`` is a
``persist`` output in dvc.yaml, so DVC keeps it between runs and a re-run (a new video, a subset of the
training identities, a held-out family) crops only what is new; files of videos that left the manifest
are deleted, so the folder always equals a fresh run's, byte for byte: what this run did (each video
computed, cached or failed, and its seconds) is written beside it, to ``data/crops.run.json``.
The work is :mod:`pipeline.ingest.cropping`.

    python -m pipeline.stages.crop [--params params.yaml]
    python -m pipeline.stages.crop --shard i/n        # one of n independent jobs
    python -m pipeline.stages.crop --merge            # then: index.csv / report.json from all shards
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

from pipeline.ingest.cropping import FAILED, load_manifest, merge, params_hash, process, shard_report_path, totals
from pipeline.params import ParamsError, load_params
from pipeline.runtime import exit_now, parse_shard, write_text


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--shard", type=parse_shard, default=None, help="i/n: process every n-th video from the i-th")
    ap.add_argument("--merge", action="store_true", help="build index.csv/report.json from the per-video files")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    try:
        params = load_params(args.params)
        manifest = load_manifest(params.data.manifest)
    except (ParamsError, FileNotFoundError, ValueError) as exc:
        print(f"crop: FAILED: {exc}", file=sys.stderr)
        return 2
    crop, F = params.crop, params.clip.frames
    phash = params_hash(F, crop)
    out_dir = Path(crop.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(params.seed)

    reports: list[dict] = []
    if args.shard is not None:
        i, n = args.shard
        rows = manifest.iloc[[k for k in range(len(manifest)) if k % n == i - 1]]
        reports = process(rows, F, crop, device=params.device, progress=not args.no_progress)
        shard = {"params_hash": phash, "shard": f"{i}/{n}", "totals": totals(reports), "videos": reports}
        shard_file = shard_report_path(out_dir, i, n)
        write_text(json.dumps(shard, indent=1, sort_keys=True), shard_file)
        t = shard["totals"]
        if not args.merge:
            print(f"crop shard {i}/{n}: {t['videos']} videos ({t['computed']} computed, {t['cached']} cached), "
                  f"{t['skipped']} skipped, {t['windows']} windows -> {shard_file}")
            return 0
    elif not args.merge:
        reports = process(manifest, F, crop, device=params.device, progress=not args.no_progress)

    index, report = merge(out_dir, manifest, phash, extra=reports)
    t = report["totals"]
    for v in report["videos"]:
        if v.get("skipped"):
            print(f"crop: skipped {v['dataset']}/{v['method']}/{v['video_id']}: {v['skipped']}", file=sys.stderr)
    failed = [v for v in report["videos"] if v.get("status") == FAILED]
    if failed:
        print(f"crop: FAILED: {len(failed)} of {t['videos']} videos could not be read (listed above; nothing is "
              f"cached for them): fix their access and run again (`dvc repro` re-runs this failed stage)",
              file=sys.stderr)
        return 1
    if t["windows"] == 0:
        print(f"crop: FAILED: no window left from {t['videos']} videos ({t['skipped']} skipped; "
              f"see {out_dir / 'report.json'})", file=sys.stderr)
        return 1
    print(f"crop: {t['videos']} videos ({t['computed']} computed, {t['cached']} cached), {t['skipped']} skipped, "
          f"{t['windows']} windows of {F} frames -> {out_dir / 'index.csv'}")
    return 0


if __name__ == "__main__":
    exit_now(main())
