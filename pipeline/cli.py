"""The ``mrl`` command (``pyproject.toml``: ``mrl = "pipeline.cli:main"``; also ``python -m pipeline.cli``).

    mrl detect VIDEO_OR_FOLDER [...] [options]     score videos, optionally with Grad-CAM heatmaps
    mrl serve [--port 8000] [options]             a local web page (and API) that scores uploaded videos
    mrl results                                   the last run's results, and how to open MLflow
    mrl compare [NAME_GLOB ...] [--families]      the experiments side by side (80 columns)

Run from the project or any folder below it: ``mrl`` finds the project as git finds its repository (the nearest
folder upwards holding ``dvc.yaml`` and ``params.yaml``, :func:`pipeline.paths.find_project_root`) and says
where it is when that is not the working directory; ``mrl detect`` and ``mrl serve`` read the model files
there unless given others (video and output paths stay relative to where you are).

The DVC stages keep their own entry points (``python -m pipeline.stages.<stage>``, run by ``dvc repro``).
Each command imports what it needs when it runs (torch, PyG, MLflow cost seconds): ``mrl --help`` and the
parser import nothing heavy (``bench/cli_startup.py`` measures it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline import paths
from pipeline.model_options import add_model_arguments

__all__ = ["build_parser", "add_serve_arguments", "serve", "main", "ui_url"]

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
    s = sub.add_parser("serve", help="a local web page (and HTTP API) that scores uploaded videos",
                       description=SERVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serve_arguments(s)
    s.set_defaults(func=serve)
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


SERVE_DESCRIPTION = """A local web page for detection: drop a video, see the verdict, the per-window scores over the
timeline and the Grad-CAM maps of the most suspicious windows; download the JSON and CSV `mrl detect` writes.
The model is loaded as `mrl detect` loads it and every video is scored by `mrl detect`'s own functions.
API under the page: POST /api/detect, GET /api/jobs/{id}, GET /api/health; OpenAPI docs at /docs.
Bound to 127.0.0.1 unless --host says otherwise."""


def add_serve_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``mrl serve``'s options (the model options and defaults are ``mrl detect``'s)."""
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    ap.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    m = add_model_arguments(ap, "model (default: the pipeline's model files, as mrl detect)")
    m.add_argument("--metrics", default="metrics/evaluate.json",
                   help="the evaluate stage's metrics, for the test AUC the page shows (default %(default)s)")
    m.add_argument("--lock", default="dvc.lock",
                   help="dvc.lock, which ties those metrics to the model files (default %(default)s)")
    ap.add_argument("--max-upload-mb", type=float, default=200, help="largest video accepted (default %(default)s)")
    ap.add_argument("--queue", type=int, default=4, help="videos that may wait while one is scored (default %(default)s)")
    ap.add_argument("--keep", type=int, default=50, help="finished jobs kept in the history (default %(default)s)")
    ap.add_argument("--heatmap-windows", type=int, default=3,
                    help="Grad-CAM maps for this many of the highest-scored windows (default %(default)s)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="decision threshold on the video score (default: the validation EER threshold of the model)")
    ap.add_argument("--stride", type=int, default=None, help="frames between window starts (default: window length)")
    ap.add_argument("--max-windows", type=int, default=None, help="at most this many windows per video (evenly spread)")
    ap.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per video")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    return ap


def serve(args: argparse.Namespace) -> int:
    """``mrl serve``: FastAPI and uvicorn are imported here, by this command only."""
    from pipeline.serving.server import run  # deferred on purpose: the web stack only for `mrl serve`

    return run(args)


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


def project(command: str) -> Optional[Path]:
    """The project root (:func:`pipeline.paths.find_project_root`), said on stderr when it is not the working
    directory; None outside a project."""
    root = paths.find_project_root()
    if root is not None and root != Path.cwd().resolve():
        print(f"{command}: project {root} (its dvc.yaml and params.yaml; found above {Path.cwd()})", file=sys.stderr)
    return root


def results(args: argparse.Namespace) -> int:
    """Print the test result of the last ``dvc repro``, its files and the command that opens the MLflow UI."""
    root = project("results")
    if root is None:
        print(f"results: no project here: no folder from {Path.cwd()} upwards holds dvc.yaml and params.yaml; "
              f"run mrl in the project or a folder below it", file=sys.stderr)
        return 2
    at = lambda p: Path(os.path.relpath(root / p))  # noqa: E731  (printed relative to where you are)
    metrics = at(paths.metrics_file("evaluate"))
    if metrics.exists():
        ev = json.loads(metrics.read_text())
        t = ev["test"]
        print(f"results: test video AUC {_fmt(t.get('auc'))} [{_fmt(t.get('auc_ci_low'))}, "
              f"{_fmt(t.get('auc_ci_high'))}] ({t.get('ci', 0.95):.0%} bootstrap interval) on {t.get('n')} test videos, ACC {_fmt(t.get('acc'))}")
        if ev.get("head") == "joint":
            print("results: detector: Algorithm 2's jointly trained model (evaluate.head: joint; the encoder and its "
                  f"own relation head, {at(paths.ENCODER)}), not the relation stage's {at(paths.RELATION)}")
        base = at(paths.metrics_file("baseline"))
        if base.exists():
            b = json.loads(base.read_text()).get("test") or {}
            print(f"results: hand-made-features baseline, same split: test AUC {_fmt(b.get('auc'))} "
                  f"[{_fmt(b.get('auc_ci_low'))}, {_fmt(b.get('auc_ci_high'))}]")
        _print_peers(ev, at(paths.metrics_file("peer")))
        tg = ev.get("targets")
        if tg:
            parts = [f"{k} {_fmt(v['value'])} {'>=' if v['met'] else '<'} {v['target']}"
                     + (f" ({v['family']})" if v.get("family") else "")
                     for k, v in tg.items() if isinstance(v, dict) and "met" in v]   # not all_met, not ceiling
            print(f"results: targets {'met' if tg['all_met'] else 'NOT met'}: " + ", ".join(parts))
            cap = tg.get("ceiling")
            if cap and not tg["test_auc"]["met"]:
                print(f"results: {cap['family']} alone caps the test AUC at {_fmt(cap['value'])} (every other family "
                      f"perfect); the test AUC target needs it at {_fmt(cap['family_auc_needed'])} or above")
        print(f"results: {metrics}, {at(paths.ROC_PNG)}, {at(paths.SCORES)}, "
              f"{at(paths.metrics_file('train_encoder'))}, {at(paths.metrics_file('train_relation'))}")
        print("results: compare experiments: mrl compare   (per fake family: mrl compare --families)")
    else:
        where = "" if root == Path.cwd().resolve() else f" in {root}"
        print(f"results: {metrics} does not exist yet: run `dvc repro`{where} first")
    from pipeline.tracking import tracking_uri  # deferred on purpose: pydantic and filelock for one path

    uri = tracking_uri()
    print(f"results: MLflow UI: mlflow ui --backend-store-uri {shlex.quote(uri)} --port {args.port}")
    print(f"results: then open {ui_url(uri, base=f'http://127.0.0.1:{args.port}')}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """``mrl compare``: :func:`pipeline.compare.compare` printed."""
    from pipeline.compare import compare as text  # deferred on purpose: only this command reads experiments

    width = args.width or max(60, shutil.get_terminal_size((80, 24)).columns)
    root = project("mrl compare")
    try:
        print(text(args.names, args.all_commits, args.families, width, cwd=root))
    except RuntimeError as e:
        print(f"mrl compare: {e}", file=sys.stderr)
        return 2
    return 0


def _print_peers(ev: dict, peer: Path) -> None:
    """The published peer's test AUC (``peer``: its metrics file), MRL's paired AUC differences
    (``vs_baseline``, ``vs_peer``) and the AUC per group of people, when the files hold them."""
    if peer.exists():
        pm = json.loads(peer.read_text())
        t = pm.get("test") or {}
        print(f"results: published peer ({pm.get('weights', 'MesoNet')}, frozen), same split: test AUC "
              f"{_fmt(t.get('auc'))} [{_fmt(t.get('auc_ci_low'))}, {_fmt(t.get('auc_ci_high'))}]")
    for name in ("baseline", "peer"):
        c = ev.get(f"vs_{name}")
        if c:
            lo, hi = c.get("ci") or (None, None)
            print(f"results: MRL - {name} (paired bootstrap on {c.get('n')} videos): AUC difference "
                  f"{_fmt(c.get('diff'))} [{_fmt(lo)}, {_fmt(hi)}], MRL ahead in {_fmt(c.get('p_above'))} of resamples")
    g = ev.get("groups")
    if g:
        for col in ("gender", "ethnicity"):
            parts = [_group_part(v, m) for v, m in (g.get(col) or {}).items()]
            print(f"results: test AUC per {col}: " + ", ".join(parts))


def _fmt(v: Optional[float]) -> str:
    """A metric as ``mrl results`` prints it: three decimals, ``n/a`` when missing."""
    return "n/a" if v is None else f"{v:.3f}"


def _group_part(value: str, m: dict) -> str:
    """``female 0.771 [0.671, 0.860] (19 people, 114 videos)``; a group under ``min_people``: ``n/a``, no
    interval."""
    ci = m.get("auc_ci")
    interval = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if m.get("auc") is not None and ci else ""
    videos = f", {m['n_videos']} videos" if m.get("n_videos") is not None else ""
    return f"{value} {_fmt(m.get('auc'))}{interval} ({m.get('n_people')} people{videos})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the subcommand, options come after it
    if command in ("detect", "serve"):  # scores as the evaluate stage computes them, on any x86-64 CPU
        from pipeline.cpu_kernels import pin_cpu_kernels  # environment only, before torch loads

        pin_cpu_kernels()
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
