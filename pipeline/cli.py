"""The ``mrl`` command (``pyproject.toml``: ``mrl = "pipeline.cli:main"``; also ``python -m pipeline.cli``).

    mrl detect VIDEO_OR_FOLDER [...] [options]     score videos, optionally with Grad-CAM heatmaps
    mrl results                                   where the last run's results are, and how to open MLflow

The DVC stages keep their own entry points (``python -m pipeline.stages.<stage>``, run by ``dvc repro``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline import paths
from pipeline.scoring import detect
from pipeline.tracking import tracking_uri

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mrl", description="Masked Relation Learning DeepFake detector")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    d = sub.add_parser("detect", help="score videos (files or folders) with a trained model",
                       description=detect.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    detect.add_arguments(d)
    d.set_defaults(func=detect.run)
    r = sub.add_parser("results", help="where the results of the last run are, and how to open the MLflow UI")
    r.set_defaults(func=results)
    return ap


def ui_url(uri: str, name: str = "mrl", base: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs page in the MLflow UI. MLflow 3.17 opens an experiment on its GenAI overview
    unless the browser has chosen "Model training" once; ``workflowType=machine_learning`` opens the runs."""
    exp_id = None
    if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).exists():
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(uri[len("sqlite:///"):])) as db:
            row = db.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone()
            exp_id = row[0] if row else None
    return f"{base}/#/experiments/{exp_id}?workflowType=machine_learning" if exp_id is not None else base


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
        _print_peers(ev, fmt)
        tg = ev.get("targets")
        if tg:
            parts = [f"{k} {fmt(v['value'])} {'>=' if v['met'] else '<'} {v['target']}"
                     + (f" ({v['family']})" if v.get("family") else "") for k, v in tg.items() if k != "all_met"]
            print(f"results: targets {'met' if tg['all_met'] else 'NOT met'}: " + ", ".join(parts))
        print(f"results: {metrics}, {paths.ROC_PNG}, {paths.SCORES}, {paths.metrics_file('train_encoder')}, "
              f"{paths.metrics_file('train_relation')}; compare experiments: dvc exp show")
    else:
        print(f"results: {metrics} does not exist yet: run `dvc repro` first")
    uri = tracking_uri()
    print(f"results: MLflow UI: mlflow ui --backend-store-uri {uri}   (then open {ui_url(uri)})")
    return 0


def _print_peers(ev: dict, fmt) -> None:
    """The published peer's test AUC, MRL's paired AUC differences (``vs_baseline``, ``vs_peer``) and the AUC
    per group of people, when the files hold them."""
    peer = paths.metrics_file("peer")
    if peer.exists():
        pm = json.loads(peer.read_text())
        t = pm.get("test") or {}
        print(f"results: published peer ({pm.get('weights', 'MesoNet')}, frozen), same split: test AUC "
              f"{fmt(t.get('auc'))} [{fmt(t.get('auc_ci_low'))}, {fmt(t.get('auc_ci_high'))}]")
    for name in ("baseline", "peer"):
        c = ev.get(f"vs_{name}")
        if c:
            lo, hi = c.get("ci") or (None, None)
            print(f"results: MRL - {name} (paired bootstrap on {c.get('n')} videos): AUC difference "
                  f"{fmt(c.get('diff'))} [{fmt(lo)}, {fmt(hi)}], MRL ahead in {fmt(c.get('p_above'))} of resamples")
    g = ev.get("groups")
    if g:
        for col in ("gender", "ethnicity"):
            parts = [f"{v} {fmt(m.get('auc'))} ({m.get('n_people')} people)" for v, m in (g.get(col) or {}).items()]
            print(f"results: test AUC per {col}: " + ", ".join(parts))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
