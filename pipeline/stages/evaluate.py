"""DVC stage ``evaluate``: video-level test metrics of the trained model (:mod:`pipeline.scoring.evaluation`).

``evaluate.head: relation`` (default) scores with the relation stage's learner (``models/relation.pt``);
``joint`` with Algorithm 2's jointly trained model (the encoder and its own relation head, ``models/encoder.pt``).

Writes ``metrics/evaluate.json`` (DVC metrics), ``plots/roc.json`` (DVC plots), ``plots/roc.png`` and
``reports/video_scores.csv``, and logs all of it to one MLflow run. ``metrics/evaluate.json`` also holds MRL
against the baseline and the peer on the same test videos (``vs_baseline``, ``vs_peer``: AUC difference with
its paired bootstrap interval, from ``reports/baseline_scores.csv`` and ``reports/peer_scores.csv``) and, when
``evaluate.groups`` names a people file, the test AUC per gender and ethnicity group (``groups``;
:mod:`pipeline.scoring.paired`).

    python -m pipeline.stages.evaluate [--params params.yaml]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import paths
from pipeline.params import load_params
from pipeline.runtime import exit_now, write_csv, write_json
from pipeline.scoring.paired import ComparisonError, comparisons, read_people, read_scores
from pipeline.scoring.evaluation import evaluate
from pipeline.scoring.metrics import save_roc_png
from pipeline.tracking import log_evaluation, start_run

STAGE = "evaluate"
#: the other detectors' per-video scores, paired with MRL's: ``vs_<name>`` in metrics/evaluate.json
OTHERS = {"baseline": paths.BASELINE_SCORES, "peer": paths.PEER_SCORES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    metrics = paths.metrics_file(STAGE)
    try:  # the files the comparisons need, checked before any work
        people = read_people(p.evaluate.groups) if p.evaluate.groups else None
        for name, path in OTHERS.items():
            read_scores(path, name)
    except ComparisonError as exc:
        print(f"evaluate: FAILED: {exc}", file=sys.stderr)
        return 2
    ev = evaluate(p.evaluate, paths.FEATURES, paths.RELATION, paths.ENCODER, Path(p.crop.out_dir), seed=p.seed,
                  device=p.device, feature_maps=paths.FEATURE_MAPS)
    ev.result.update(comparisons(ev.videos, OTHERS, p.crop.out_dir, people, p.evaluate.groups,
                                 p.evaluate.bootstrap, p.evaluate.ci, p.seed))
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
    for name in OTHERS:
        c = ev.result[f"vs_{name}"]
        ci = c["ci"] or [None, None]
        print(f"evaluate: MRL - {name}: AUC difference {fmt(c['diff'])} [{fmt(ci[0])}, {fmt(ci[1])}] (paired "
              f"bootstrap, {c['n']} videos), MRL ahead in {fmt(c['p_above'])} of the resamples")
    return 0


if __name__ == "__main__":
    exit_now(main())
