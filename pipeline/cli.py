"""The ``mrl`` command (``pyproject.toml``: ``mrl = "pipeline.cli:main"``; also ``python -m pipeline.cli``).

    mrl detect VIDEO_OR_FOLDER [...] [options]     score videos, optionally with Grad-CAM heatmaps
    mrl results                                   the last run's results, and how to open MLflow
    mrl compare [NAME_GLOB ...] [--families]      the experiments side by side (80 columns)

The DVC stages keep their own entry points (``python -m pipeline.stages.<stage>``, run by ``dvc repro``).
Each command imports what it needs when it runs (torch, PyG, MLflow cost seconds): ``mrl --help`` and the
parser import nothing heavy (``bench/cli_startup.py`` measures it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline import paths

__all__ = ["build_parser", "main", "ui_url"]

DETECT_DESCRIPTION = """\
Score videos with a trained MRL model: each video gets a fake probability (the
mean over its windows) and a verdict, and optionally Grad-CAM heatmaps that
show where the model looked.

Each video is cropped as the training data was (face detection, tracking,
square crops with the crop settings stored in the encoder file), cut into
windows of the model's length and scored as the evaluate stage scores the test
set. A video is called fake when its score reaches the threshold (default: the
validation EER threshold stored in the relation model). A broken, faceless or
too short video is reported as skipped, with the reason; the others go on."""

DETECT_EPILOG = """\
examples:
  mrl detect clip.mp4                       the pipeline's models/*.pt
  mrl detect videos/ --heatmaps maps        a folder, with Grad-CAM overlays
  mrl detect clip.mp4 --mlflow-run RUN_ID --trust-pickle

which MLflow run holds a model (--mlflow-run RUN_ID):
  the stage runs named train_relation (its relation learner, used with the
  --encoder file) and train_encoder (the encoder with the relation head trained
  with it), under the experiment's run in the MLflow UI (`mrl results` prints
  its address). The runs that made the current model files are named in
  runs/train_relation/mlflow_run.json and runs/train_encoder/mlflow_run.json.
  A run made from committed outputs (tag mrl.restored_from: DVC did not run the
  stage on this machine) holds no model: use the model files.

safety: model files load with torch.load(weights_only=True), so no code in them
runs; an MLflow model is a pickle (loading it runs code from the file) and is
refused without --trust-pickle."""


def build_parser(command: Optional[str] = "detect") -> argparse.ArgumentParser:
    """The parser; ``command``: the subcommand whose options are needed (``mrl detect``'s come from
    :mod:`pipeline.scoring.detect`, which imports torch: only loaded when that command is asked for)."""
    ap = argparse.ArgumentParser(prog="mrl", description="Masked Relation Learning DeepFake detector: score "
                                 "videos, read the pipeline's results and compare its experiments.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    d = sub.add_parser("detect", help="score videos (files or folders) with a trained model",
                       description=DETECT_DESCRIPTION, epilog=DETECT_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "detect":
        from pipeline.scoring import detect  # deferred on purpose: torch, PyG, h5py (seconds)

        detect.add_arguments(d)
        d.set_defaults(func=detect.run)
    r = sub.add_parser("results", help="the test result of the last run, its files, and how to open the MLflow UI")
    r.add_argument("--port", type=int, default=5000, help="the port you start the MLflow UI on (default %(default)s)")
    r.set_defaults(func=results)
    c = sub.add_parser("compare", help="the experiments side by side: changed params, test AUC with its interval, "
                       "baseline", description="The experiments of `dvc exp show` in a table that fits a terminal: "
                       "each experiment's params that differ from its commit's, the model's test AUC with its "
                       "bootstrap interval, the baseline's test AUC (and any other metrics file with a test AUC).")
    c.add_argument("names", nargs="*", metavar="NAME_GLOB", help="only experiments whose name matches "
                   "(shell pattern, e.g. 'mask-*')")
    c.add_argument("--families", action="store_true", help="also the test AUC of each fake family, with its "
                   "interval, and the baseline's")
    c.add_argument("--all-commits", action="store_true", help="the experiments of every commit, not only HEAD's")
    c.add_argument("--width", type=int, default=None, help="line width (default: the terminal's, at least 60)")
    c.set_defaults(func=compare)
    return ap


def ui_url(uri: str, name: str = "mrl", base: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs page in the MLflow UI. MLflow 3.17 opens an experiment on its GenAI overview
    unless the browser has chosen "Model training" once; ``workflowType=machine_learning`` opens the runs.
    When the ``track`` stage has set the experiment's shared view (:data:`pipeline.tracking.VIEW_KEY`:
    test AUC, interval, baseline and the params that differ as columns), the link opens it."""
    exp_id, view = None, False
    if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).exists():
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(uri[len("sqlite:///"):])) as db:
            row = db.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone()
            exp_id = row[0] if row else None
            view = exp_id is not None and db.execute(
                "SELECT 1 FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                (exp_id, f"mlflow.sharedViewState.{VIEW_KEY}")).fetchone() is not None
    if exp_id is None:
        return base
    # the runs route itself: /#/experiments/<id> redirects there and drops the viewStateShareKey parameter
    return f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning" + (f"&viewStateShareKey={VIEW_KEY}"
                                                                                  if view else "")


VIEW_KEY = "mrl"  # = pipeline.tracking.VIEW_KEY (not imported: importing tracking costs this module's startup)


def results(args: argparse.Namespace) -> int:
    """Print the test result of the last ``dvc repro``, its files and the command that opens the MLflow UI."""
    metrics = paths.metrics_file("evaluate")
    if metrics.exists():
        ev = json.loads(metrics.read_text())
        t = ev["test"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"results: test video AUC {fmt(t.get('auc'))} [{fmt(t.get('auc_ci_low'))}, {fmt(t.get('auc_ci_high'))}] "
              f"({t.get('ci', 0.95):.0%} bootstrap interval) on {t.get('n')} test videos, ACC {fmt(t.get('acc'))}")
        base = paths.metrics_file("baseline")
        if base.exists():
            b = json.loads(base.read_text()).get("test") or {}
            print(f"results: hand-made-features baseline, same split: test AUC {fmt(b.get('auc'))} "
                  f"[{fmt(b.get('auc_ci_low'))}, {fmt(b.get('auc_ci_high'))}]")
        tg = ev.get("targets")
        if tg:
            parts = [f"{k} {fmt(v['value'])} {'>=' if v['met'] else '<'} {v['target']}"
                     + (f" ({v['family']})" if v.get("family") else "") for k, v in tg.items() if k != "all_met"]
            print(f"results: targets {'met' if tg['all_met'] else 'NOT met'}: " + ", ".join(parts))
        print(f"results: {metrics}, {paths.ROC_PNG}, {paths.SCORES}, {paths.metrics_file('train_encoder')}, "
              f"{paths.metrics_file('train_relation')}")
        print("results: compare experiments: mrl compare   (per fake family: mrl compare --families)")
    else:
        print(f"results: {metrics} does not exist yet: run `dvc repro` first")
    from pipeline.tracking import tracking_uri  # deferred on purpose: pydantic and filelock for one path

    uri = tracking_uri()
    print(f"results: MLflow UI: mlflow ui --backend-store-uri {uri} --port {args.port}")
    print(f"results: then open {ui_url(uri, base=f'http://127.0.0.1:{args.port}')}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """``mrl compare``: :func:`pipeline.compare.compare` printed."""
    from pipeline.compare import compare as text  # deferred on purpose: only this command reads experiments

    width = args.width or max(60, shutil.get_terminal_size((80, 24)).columns)
    try:
        print(text(args.names, args.all_commits, args.families, width))
    except RuntimeError as e:
        print(f"mrl compare: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the subcommand, options come after it
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
