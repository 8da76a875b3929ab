"""What both training stages do around their training, written once: under :func:`pipeline.distributed.session`,
rank 0 opens the MLflow run, the training runs on every rank, and rank 0 saves the model file atomically, writes
the per-epoch history (``plots/<stage>.csv``) and the summary (``metrics/<stage>.json``), and logs both and the
model; then every rank waits at the barrier."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from pipeline import distributed as dist
from pipeline import paths
from pipeline.runtime import atomic_torch_save, write_csv, write_json
from pipeline.tracking import log_epoch_metrics, log_final, start_run

__all__ = ["run_training_stage"]

LogEpoch = Callable[[dict, int], None]


def run_training_stage(stage: str, p: Any, *, model_path: Path, train: Callable[[Path, LogEpoch], Any],
                       payload: Callable[[Any], dict], summary: Callable[[Any], dict],
                       run_facts: Optional[Callable[[Any], dict]] = None, run_tags: Optional[dict] = None, final_metrics: Optional[Callable[[Any], dict]] = None,
                       seconds_digits: int = 1) -> Optional[dict]:
    """Run training stage ``stage``; returns its summary on rank 0 (None on the other ranks).

    ``train(run_dir, log_epoch)`` returns a result with ``.fit`` (:class:`pipeline.learning.training.FitResult`)
    and ``.model``; ``payload(result)`` is the model file's dict, written to ``model_path``; ``summary(result)``
    the stage's figures (the top level of the metrics file), ``run_facts(result)`` the facts of this run,
    nested under ``"run"`` with ``seconds`` (since the session started): DVC and `mrl compare` read the top
    level, which stays small. Run ids are not written there (they mean nothing on another machine).
    ``p`` gives ``device`` and ``mlflow`` and is what MLflow logs as the run's params."""
    run_dir, metrics, plots = paths.run_dir(stage), paths.metrics_file(stage), paths.plots_file(stage)
    out = None
    with dist.session(p.device):
        main_rank = dist.is_main()
        t0 = time.time()
        tracking = start_run(stage, p, p.mlflow, run_tags) if main_rank else contextlib.nullcontext()
        with tracking as run:
            res = train(run_dir, log_epoch_metrics if main_rank else (lambda m, e: None))
            if main_rank:  # rank 0 writes the outputs and logs
                atomic_torch_save(payload(res), model_path)
                out = {**summary(res), "run": {**(run_facts(res) if run_facts else {}),
                                               "seconds": round(time.time() - t0, seconds_digits)}}
                write_csv(pd.DataFrame(res.fit.history), plots)
                write_json(out, metrics)
                log_final(run, out, artifacts=[plots], model=res.model, run_dir=run_dir,
                          metrics=final_metrics(res) if final_metrics else None)
        dist.barrier()
    return out
