"""DVC stage ``evaluate``: video-level test metrics of the trained model (:mod:`pipeline.scoring.evaluation`).

``evaluate.head: relation`` (default) scores with the relation stage's learner (``models/relation.pt``);
``joint`` with Algorithm 2's jointly trained model (the encoder and its own relation head, ``models/encoder.pt``).

Writes ``metrics/evaluate.json`` (DVC metrics), ``plots/roc.json`` (DVC plots), ``plots/roc.png`` and
``reports/video_scores.csv``, and logs all of it to one MLflow run.

    python -m pipeline.stages.evaluate [--params params.yaml]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import paths
from pipeline.params import load_params
from pipeline.runtime import exit_now, write_csv, write_json
from pipeline.scoring.evaluation import evaluate
from pipeline.scoring.metrics import save_roc_png
from pipeline.tracking import log_evaluation, start_run

STAGE = "evaluate"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    metrics = paths.metrics_file(STAGE)
    ev = evaluate(p.evaluate, paths.FEATURES, paths.RELATION, paths.ENCODER, Path(p.crop.out_dir), seed=p.seed,
                  device=p.device)
    write_json({"roc": ev.roc}, paths.ROC_JSON)
    save_roc_png(ev.curves, paths.ROC_PNG)
    write_csv(ev.videos, paths.SCORES)
    write_json(ev.result, metrics)
    model = paths.ENCODER if p.evaluate.head == "joint" else paths.RELATION   # where the scoring head came from
    with start_run(STAGE, p, p.mlflow, {"relation_model": str(model), "evaluate.head": p.evaluate.head}) as run:
        log_evaluation(ev.result, artifacts=[metrics, paths.ROC_JSON, paths.ROC_PNG, paths.SCORES])
        write_json({"run_id": run.info.run_id}, paths.run_record(STAGE))
    r, loc = ev.result["test"], ev.result["localisation"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"evaluate ({p.evaluate.head} head, {model}): {r['n']} test videos: AUC {fmt(r['auc'])} [{fmt(r['auc_ci_low'])}, {fmt(r['auc_ci_high'])}], "
          f"ACC {fmt(r['acc'])}, EER {fmt(r['eer'])}, AP {fmt(r['ap'])}; localisation on {loc.get('windows', 0)} "
          f"fake windows: pointing game {fmt(loc.get('pointing_game'))}, energy inside mask "
          f"{fmt(loc.get('energy_inside'))} (mask area {fmt(loc.get('mask_area'))}) -> {metrics}")


if __name__ == "__main__":
    exit_now(main())
