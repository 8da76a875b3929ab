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

import torch

from pipeline import paths
from pipeline.learning.relation import relation_payload, train_relation
from pipeline.learning.stage_run import run_training_stage
from pipeline.params import load_params
from pipeline.runtime import exit_now, sha256_file

STAGE = "train_relation"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    expect = sha256_file(paths.ENCODER) if paths.ENCODER.exists() else None
    if p.train_relation.threads:
        torch.set_num_threads(p.train_relation.threads)
    summary = run_training_stage(
        STAGE, p, model_path=paths.RELATION, run_tags={"features": str(paths.FEATURES)}, seconds_digits=2,
        train=lambda run_dir, log_epoch: train_relation(p.relation, p.mask, p.train_relation, paths.FEATURES, run_dir,
                                                        seed=p.seed, device=p.device, encoder_sha256=expect,
                                                        log_epoch=log_epoch),
        payload=relation_payload,
        summary=lambda res: {"best_epoch": res.fit.best_epoch, "threshold": res.threshold,
                             **{k: v for k, v in res.fit.best_metrics.items() if k.startswith("val_")}},
        run_facts=lambda res: {"train_windows": res.train_windows, "val_windows": res.val_windows},
        final_metrics=lambda res: {"threshold": res.threshold})
    if summary is not None:
        print(f"train_relation: {p.relation.cell}, mask {p.mask.strategy}@{p.mask.rate}: best epoch "
              f"{summary['best_epoch']}, val AUC {summary.get('val_auc', float('nan')):.4f}, {summary['run']['seconds']} s "
              f"-> {paths.RELATION}")


if __name__ == "__main__":
    exit_now(main())
