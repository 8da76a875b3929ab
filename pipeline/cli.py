"""The ``mrl`` command (``pyproject.toml``: ``mrl = "pipeline.cli:main"``; also ``python -m pipeline.cli``).

    mrl detect VIDEO_OR_FOLDER [...] [options]     score videos, optionally with Grad-CAM heatmaps

The DVC stages keep their own entry points (``python -m pipeline.stages.<stage>``, run by ``dvc repro``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pipeline.scoring import detect

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mrl", description="Masked Relation Learning DeepFake detector")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    d = sub.add_parser("detect", help="score videos (files or folders) with a trained model",
                       description=detect.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    detect.add_arguments(d)
    d.set_defaults(func=detect.run)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
