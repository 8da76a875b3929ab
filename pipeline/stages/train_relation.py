"""DVC stage ``train_relation``: the relation learner (masked edges + GConv-GRU + MLP) on the cached vertices.

Only this stage and ``evaluate`` depend on ``mask.*`` and ``relation.*``, so a masking sweep
(``dvc exp run -S mask.rate=0.6``) re-runs seconds of work, never the crops or the encoder. Trains with
:mod:`pipeline.learning.relation`; writes ``models/relation.pt``, ``metrics/train_relation.json`` and
``plots/train_relation.csv``, and one MLflow run.

    python -m pipeline.stages.train_relation [--params params.yaml]
    torchrun --nproc_per_node 2 -m pipeline.stages.train_relation     # data parallel (README, "Scaling out")
"""
from __future__ import annotations

import argparse
import contextlib
import time

import pandas as pd
import torch

from feature_cache import sha256_file
from pipeline import paths
from pipeline.learning import distributed as dist
from pipeline.learning.relation import relation_payload, train_relation
from pipeline.params import load_params
from pipeline.runtime import atomic_torch_save, exit_now, write_csv, write_json
from pipeline.tracking import log_epoch_metrics, log_final, start_run

STAGE = "train_relation"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    run_dir, metrics, plots = paths.run_dir(STAGE), paths.metrics_file(STAGE), paths.plots_file(STAGE)
    expect = sha256_file(paths.ENCODER) if paths.ENCODER.exists() else None
    if p.train_relation.threads:
        torch.set_num_threads(p.train_relation.threads)
    with dist.session(p.device):
        main_rank = dist.is_main()
        t0 = time.time()
        tracking = (start_run(STAGE, p, p.mlflow, {"features": str(paths.FEATURES)}) if main_rank
                    else contextlib.nullcontext())
        with tracking as run:
            res = train_relation(p, paths.FEATURES, run_dir, expect,
                                 log_epoch_metrics if main_rank else (lambda m, e: None))
            if main_rank:  # rank 0 writes the outputs and logs
                atomic_torch_save(relation_payload(p, res), paths.RELATION)
                # top level: the selected epoch's validation metrics; the run's facts nested under "run"
                summary = {"best_epoch": res.fit.best_epoch, "threshold": res.threshold,
                           **{k: v for k, v in res.fit.best_metrics.items() if k.startswith("val_")},
                           "run": {"seconds": round(time.time() - t0, 2), "train_windows": res.train_windows,
                                   "val_windows": res.val_windows}}
                write_csv(pd.DataFrame(res.fit.history), plots)
                write_json(summary, metrics)
                log_final(run, summary, artifacts=[plots], model=res.model, run_dir=run_dir,
                          metrics={"threshold": res.threshold})
        dist.barrier()
    if main_rank:
        print(f"train_relation: {p.relation.cell}, mask {p.mask.strategy}@{p.mask.rate}: best epoch "
              f"{summary['best_epoch']}, val AUC {summary.get('val_auc', float('nan')):.4f}, {summary['run']['seconds']} s "
              f"-> {paths.RELATION}")


if __name__ == "__main__":
    exit_now(main())
