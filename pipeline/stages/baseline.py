"""DVC stage ``baseline``: twelve hand-made features + logistic regression on the same crops and splits
(:mod:`pipeline.scoring.baseline`), so every run of the model is compared with a floor it must beat.

Writes ``metrics/baseline.json`` (val and test video AUC with bootstrap intervals, test AUC per method with
intervals, counts of test videos and people) and ``reports/baseline_scores.csv`` (one row per test video, which
``evaluate`` pairs with MRL's); ``dvc exp show`` and ``mrl results`` show it next to the model's test AUC.

    python -m pipeline.stages.baseline [--params params.yaml]
"""
from __future__ import annotations

import argparse

from pipeline import paths
from pipeline.params import load_params
from pipeline.runtime import exit_now, write_csv, write_json
from pipeline.scoring.baseline import baseline_report

STAGE = "baseline"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    res, test_videos = baseline_report(p.crop.out_dir, p.seed, p.evaluate.bootstrap, p.evaluate.ci)
    write_csv(test_videos, paths.BASELINE_SCORES)
    write_json(res, paths.metrics_file(STAGE))
    fmt = lambda m: "n/a" if not m or m.get("auc") is None else (  # noqa: E731
        f"{m['auc']:.3f} [{m['auc_ci_low'] or float('nan'):.3f}, {m['auc_ci_high'] or float('nan'):.3f}] "
        f"on {m['n']} videos")
    print(f"baseline (12 hand-made features, logistic regression): val AUC {fmt(res.get('val'))}, "
          f"test AUC {fmt(res.get('test'))} -> {paths.metrics_file(STAGE)}, {paths.BASELINE_SCORES}")


if __name__ == "__main__":
    exit_now(main())
