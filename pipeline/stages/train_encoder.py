"""DVC stage ``train_encoder``: backbone + STA trained jointly with a relation head (Eq. 12).

Reads the face-crop windows (``data/crops``), trains (:mod:`pipeline.learning.encoder`), and writes
``models/encoder.pt``, ``metrics/train_encoder.json`` and ``plots/train_encoder.csv``; one MLflow run
holds the params, the per-epoch metrics and the model.

    python -m pipeline.stages.train_encoder [--params params.yaml]
    torchrun --nproc_per_node 4 -m pipeline.stages.train_encoder      # data parallel (README, "Scaling out")
"""
from __future__ import annotations

import argparse
import contextlib
import time

import pandas as pd

from pipeline import paths
from pipeline.learning import distributed as dist
from pipeline.learning.encoder import best_val_metrics, encoder_payload, train_encoder
from pipeline.params import load_params
from pipeline.runtime import atomic_torch_save, exit_now, write_csv, write_json
from pipeline.tracking import log_epoch_metrics, log_final, start_run

STAGE = "train_encoder"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    run_dir, metrics, plots = paths.run_dir(STAGE), paths.metrics_file(STAGE), paths.plots_file(STAGE)
    with dist.session(p.device):
        main_rank = dist.is_main()
        t0 = time.time()
        with (start_run(STAGE, p, p.mlflow) if main_rank else contextlib.nullcontext()) as run:
            res = train_encoder(p, p.crop.out_dir, run_dir, log_epoch_metrics if main_rank else (lambda m, e: None))
            if main_rank:  # rank 0 writes the outputs and logs
                atomic_torch_save(encoder_payload(p, res), paths.ENCODER)
                # top level: the selected epoch's validation metrics; the run's facts nested under "run"
                summary = {"best_epoch": res.fit.best_epoch, **best_val_metrics(res.fit),
                           "run": {"epochs_run": len(res.fit.history) - res.fit.resumed_from,
                                   "seconds": round(time.time() - t0, 1), "train_windows": res.train_windows,
                                   "val_windows": res.val_windows, "train_videos": res.train_videos,
                                   "train_identities": res.train_identities}}
                write_csv(pd.DataFrame(res.fit.history), plots)
                write_json(summary, metrics)
                log_final(run, summary, artifacts=[plots], model=res.model, run_dir=run_dir)
        dist.barrier()
    if main_rank:
        print(f"train_encoder: best epoch {summary['best_epoch']}, val AUC {summary.get('val_auc', float('nan')):.4f}, "
              f"{summary['run']['train_windows']} train / {summary['run']['val_windows']} val windows, "
              f"{summary['run']['seconds']} s "
              f"-> {paths.ENCODER}")


if __name__ == "__main__":
    exit_now(main())
