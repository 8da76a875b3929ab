"""DVC stage ``scan``: a fingerprint of the dataset folders (``data/listing.json``), so the manifest follows the data.

``python -m pipeline.stages.scan [--params params.yaml]`` reads ``data.datasets`` and writes, per dataset, the
number of files, their total size and a SHA-256 of their names, sizes, modification times and readability
(:mod:`pipeline.ingest.listing`). The stage is ``always_changed`` in ``dvc.yaml``; ``manifest``
depends on its output, so adding, deleting or replacing a video re-runs ``manifest`` (and what follows from
a changed manifest), and an unchanged dataset re-runs nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline.ingest.listing import dataset_listing
from pipeline.params import ParamsError, load_params
from pipeline.paths import LISTING
from pipeline.runtime import atomic_write, exit_now

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    ap.add_argument("--out", default=str(LISTING), help=f"output file (default {LISTING})")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(f"scan: FAILED: {exc}", file=sys.stderr)
        return 2
    listing = dataset_listing(params.data.datasets)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, "w") as f:
        f.write(json.dumps(listing, indent=1, sort_keys=True) + "\n")
    summary = ", ".join(f"{k}: " + ("tracked by DVC" if v.get("tracked_by_dvc") else "missing" if v.get("missing")
                                    else f"{v['files']} files") for k, v in listing.items())
    print(f"scan: {summary} -> {args.out}")
    return 0


if __name__ == "__main__":
    exit_now(main())
