"""DVC stage ``manifest``: list every configured dataset's videos with label and split.

``python -m pipeline.stages.manifest [--params params.yaml]`` reads ``seed`` and ``data``, builds the
manifest with :func:`pipeline.ingest.datasets.build_manifest` (which runs the leak check), writes
``data.manifest`` atomically and prints one summary line.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import pandas as pd

from pipeline.ingest.datasets import build_manifest, write_manifest
from pipeline.params import load_params
from pipeline.runtime import exit_now

__all__ = ["summarize", "main"]


def summarize(df: pd.DataFrame) -> str:
    """One line: videos per dataset and split as ``real/fake`` counts."""
    parts = []
    for (dataset, split), sub in df.groupby(["dataset", "split"], sort=True):
        fake = int(sub["label"].sum())
        parts.append(f"{dataset}/{split} {len(sub) - fake} real {fake} fake")
    return f"{len(df)} videos: " + ", ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build and write the manifest described by the params file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    df = build_manifest(params.data.datasets, params.seed, params.data.holdout_methods,
                        params.data.train_identities)
    write_manifest(df, params.data.manifest)
    print(f"manifest: {params.data.manifest}: {summarize(df)}")


if __name__ == "__main__":
    exit_now(main())
