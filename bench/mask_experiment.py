"""Time of a masking experiment (`dvc exp run -S mask.rate=0.6`) against the full `dvc repro` it reuses.

    python bench/mask_experiment.py [--tiny] [--keep DIR] [--device cuda]

Builds a fresh copy of the project (tests/workspace.py make_workspace: git + DVC, the DEFAULT params
or, with --tiny, the tiny params of tests/test_pipeline_e2e.py), runs `dvc repro` timed, then
`dvc exp run -S mask.rate=0.6` timed, and prints both, the stages each ran and the ratio (goal >= 20x:
the experiment re-runs train_relation and evaluate only, never the crops or the encoder).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test workspace helper

from workspace import make_workspace, run_dvc, stages_run  # noqa: E402


def tiny_params() -> dict:
    from test_pipeline_e2e import TINY  # noqa: E402

    return TINY


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny params of the end-to-end test (about 2 minutes)")
    ap.add_argument("--rate", default="0.6")
    ap.add_argument("--keep", default=None, help="build the workspace here and keep it")
    ap.add_argument("--device", default=None, help="the params' device (default: params.yaml's, auto)")
    args = ap.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mrl-bench-exp-"))
    try:
        over = dict(tiny_params()) if args.tiny else {}
        if args.device:
            over["device"] = args.device
        ws = make_workspace(root / "repo", over or None)
        t = time.perf_counter()
        full = run_dvc(ws, "repro")
        t_full = time.perf_counter() - t
        t = time.perf_counter()
        exp = run_dvc(ws, "exp", "run", "-S", f"mask.rate={args.rate}")
        t_exp = time.perf_counter() - t
        ratio = t_full / t_exp
        print(f"params: {'tiny (tests/test_pipeline_e2e.py)' if args.tiny else 'default params.yaml'}")
        print(f"dvc repro                      {t_full:8.1f} s  stages: {', '.join(stages_run(full.stdout))}")
        print(f"dvc exp run -S mask.rate={args.rate}  {t_exp:8.1f} s  stages: {', '.join(stages_run(exp.stdout))}")
        print(f"ratio {ratio:.1f}x (goal >= 20x: {'OK' if ratio >= 20 else 'MISSED'})")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
