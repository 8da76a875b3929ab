"""DVC stage ``train_encoder``: backbone + STA trained jointly with a relation head (Eq. 12).

Reads the face-crop windows (``data/crops``), trains (:mod:`pipeline.learning.encoder`), and writes
``models/encoder.pt``, ``metrics/train_encoder.json`` and ``plots/train_encoder.csv``; one MLflow run
holds the params, the per-epoch metrics and the model.

    python -m pipeline.stages.train_encoder [--params params.yaml]
    torchrun --nproc_per_node 4 -m pipeline.stages.train_encoder      # data parallel (README, "Scaling out")
"""
from __future__ import annotations

import argparse

from pipeline import paths
from pipeline.learning.encoder import best_val_metrics, encoder_payload, train_encoder
from pipeline.learning.stage_run import run_training_stage
from pipeline.params import load_params
from pipeline.runtime import exit_now

STAGE = "train_encoder"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    summary = run_training_stage(
        STAGE, p, model_path=paths.ENCODER,
        train=lambda run_dir, log_epoch: train_encoder(p.encoder, p.clip, p.train_encoder, p.crop.out_dir, run_dir,
                                                       seed=p.seed, device=p.device, image_size=p.crop.image_size,
                                                       log_epoch=log_epoch),
        payload=lambda res: encoder_payload(res, p.crop),
        summary=lambda res: {"best_epoch": res.fit.best_epoch, **best_val_metrics(res.fit)},
        run_facts=lambda res: {"epochs_run": len(res.fit.history) - res.fit.resumed_from,
                               "train_windows": res.train_windows, "val_windows": res.val_windows,
                               "train_videos": res.train_videos, "train_identities": res.train_identities})
    if summary is not None:
        print(f"train_encoder: best epoch {summary['best_epoch']}, val AUC {summary.get('val_auc', float('nan')):.4f}, "
              f"{summary['run']['train_windows']} train / {summary['run']['val_windows']} val windows, "
              f"{summary['run']['seconds']} s "
              f"-> {paths.ENCODER}")


if __name__ == "__main__":
    exit_now(main())
