"""Time of a masking experiment (`dvc exp run -S mask.rate=0.6`) against the full `dvc repro` it reuses,
and where the experiment's seconds go.

    python bench/mask_experiment.py [--tiny] [--keep DIR] [--reuse DIR] [--device cuda]

Builds a fresh copy of the project (tests/workspace.py make_workspace: git + DVC, the DEFAULT params
or, with --tiny, the tiny params of tests/test_pipeline_e2e.py), runs `dvc repro` timed, then
`dvc exp run -S mask.rate=0.6` timed, and prints both, the stages each ran and the ratio (goal >= 20x:
the experiment re-runs train_relation and evaluate only, never the crops or the encoder). Then, in the
same workspace, it times the parts of the experiment: Python start-up, the imports of each stage (torch
and the rest) and of MLflow, the interpreter's teardown after them (which the stages skip, see
``pipeline.runtime.exit_now``), each stage run on its own (wall), inside it (cProfile) the MLflow calls and
the actual work, DVC's own share (the experiment's time minus the two stage runs), and the floor: the
experiment's time with no work and no MLflow at all.
`--reuse DIR` skips the full repro and times the experiment and its parts in a workspace kept before.
"""
from __future__ import annotations

import argparse
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test workspace helper

from workspace import _env, make_workspace, run_dvc, stages_run  # noqa: E402

STAGES = ("train_relation", "evaluate")
# cProfile entries (file suffix, function) -> the part of a stage they measure
INSIDE = {("pipeline/tracking.py", "start_run"): "MLflow: store, parent/child runs, params",
          ("pipeline/tracking.py", "log_final"): "MLflow: final metrics, artifacts, model",
          ("pipeline/tracking.py", "log_evaluation"): "MLflow: final metrics, artifacts, model",
          ("pipeline/learning/relation.py", "train_relation"): "work: training / evaluation",
          ("pipeline/scoring/evaluation.py", "evaluate"): "work: training / evaluation"}


def _python(ws: Path, *args: str) -> float:
    """Wall seconds of ``python ARGS`` in the workspace (its environment, its copy of the packages)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ws, env=_env(), check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def timeline(ws: Path, *args: str) -> tuple[float, dict[str, float], str]:
    """Run ``dvc ARGS`` and time it from its own output, line by line: (total seconds, seconds of each stage
    from its ``> cmd`` line to DVC's next line about the lock file, i.e. the stage process and DVC's commit
    of its outputs, the output). DVC's own share is the total minus the stages: all from this one run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=ws, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, stage_s, current = [], {}, None
    for line in proc.stdout:
        now = time.perf_counter() - t0
        lines.append(line)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            current = (m.group(1), now)
        elif current and line.startswith(("Updating lock file", "Generating lock file")):
            stage_s[current[0]] = now - current[1]
            current = None
    if proc.wait() != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{''.join(lines)[-6000:]}")
    return time.perf_counter() - t0, stage_s, "".join(lines)


def _median(f, n: int = 3) -> float:
    return statistics.median(f() for _ in range(n))


def _seconds_inside(ws: Path, stmt: str, setup: str = "pass") -> float:
    """Seconds ``stmt`` takes inside a fresh Python process of the workspace, after ``setup`` (start-up and
    the interpreter's teardown not counted)."""
    code = f"import time; {setup}; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ws, env=_env(), check=True,
                         capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def parts(ws: Path) -> list[tuple[str, float]]:
    """(part, seconds) of a mask experiment, measured piece by piece in the workspace."""
    out = []
    start = _median(lambda: _python(ws, "-c", "pass"))
    out.append(("Python start-up (x2 stages)", 2 * start))
    torch_imp = _median(lambda: _seconds_inside(ws, "import torch"))
    out.append(("import torch (x2 stages)", 2 * torch_imp))
    for stage in STAGES:
        imp = _median(lambda: _seconds_inside(ws, f"import pipeline.stages.{stage}")) - torch_imp
        out.append((f"{stage}: other imports (pandas, sklearn, PyG, ...)", imp))
        out.append((f"{stage}: import mlflow, its store client and mlflow.pytorch", _median(lambda: _seconds_inside(
            ws, "import mlflow, mlflow.pytorch; from mlflow.tracking import MlflowClient",
            setup=f"import pipeline.stages.{stage}"))))
        teardown = _median(lambda: _python(ws, "-W", "ignore", "-c", f"import pipeline.stages.{stage}")) - start \
            - imp - torch_imp
        out.append((f"{stage}: interpreter teardown after these imports (skipped by exit_now)", teardown))
    walls = {}
    for stage in STAGES:
        walls[stage] = _python(ws, "-m", "pipeline.stages." + stage)
        prof = ws / f"{stage}.prof"
        # main() under cProfile.run (the module's __main__ block would end the process before the profile is
        # written: pipeline.runtime.exit_now)
        _python(ws, "-c", f"import cProfile; from pipeline.stages import {stage}; "
                          f"cProfile.run('{stage}.main([])', {str(prof)!r})")
        stats = pstats.Stats(str(prof)).stats
        seen: dict = {}
        for (file, _, func), (_, _, _, cum, _) in stats.items():
            for (suffix, name), part in INSIDE.items():
                if func == name and file.endswith(suffix):
                    seen[part] = seen.get(part, 0.0) + cum
        for part, sec in sorted(seen.items()):
            out.append((f"{stage}: {part} (cProfile)", sec))
        os.remove(prof)
    out += [(f"{stage}: whole stage run alone (wall)", walls[stage]) for stage in STAGES]
    return out


def floor(measured: list[tuple[str, float]], dvc_own: float) -> float:
    """The experiment's fixed floor with no work and no MLflow at all: DVC's own work (and ``scan``), and
    for each of the two stages Python's start-up and its imports (torch, PyG, pandas, scikit-learn)."""
    d = dict(measured)
    return dvc_own + d["Python start-up (x2 stages)"] + d["import torch (x2 stages)"] + sum(
        d[f"{stage}: other imports (pandas, sklearn, PyG, ...)"] for stage in STAGES)


def tiny_params() -> dict:
    from test_pipeline_e2e import TINY  # noqa: E402

    return TINY


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny params of the end-to-end test (about 2 minutes)")
    ap.add_argument("--rate", default="0.6")
    ap.add_argument("--keep", default=None, help="build the workspace here and keep it")
    ap.add_argument("--device", default=None, help="the params' device (default: params.yaml's, auto)")
    ap.add_argument("--reuse", default=None, help="a workspace kept by --keep: time the experiment only")
    ap.add_argument("--no-parts", action="store_true", help="skip timing the parts")
    ap.add_argument("--full-seconds", type=float, default=None,
                    help="with --reuse: the full repro's seconds measured before (for the ratio)")
    args = ap.parse_args(argv)
    root = Path(args.keep or args.reuse or tempfile.mkdtemp(prefix="mrl-bench-exp-"))
    try:
        ws, t_full, full_stages = root / "repo", None, []
        if not args.reuse:
            over = dict(tiny_params()) if args.tiny else {}
            if args.device:
                over["device"] = args.device
            make_workspace(ws, over or None)
            t_full, full_stage_s, out = timeline(ws, "repro")
            full_stages = stages_run(out)
        t_exp, stage_s, out = timeline(ws, "exp", "run", "-S", f"mask.rate={args.rate}")
        t_full = t_full if t_full is not None else args.full_seconds
        print(f"params: {'tiny (tests/test_pipeline_e2e.py)' if args.tiny else 'default params.yaml'}")
        if t_full is not None:
            print(f"dvc repro                      {t_full:8.1f} s  stages: {', '.join(full_stages) or '(given)'}")
            for stage, sec in (full_stage_s if not args.reuse else {}).items():
                print(f"  {stage:28s} {sec:7.1f} s  ({sec / 60:.1f} min)")
        print(f"dvc exp run -S mask.rate={args.rate}  {t_exp:8.1f} s  stages: {', '.join(stages_run(out))}")
        for stage, sec in stage_s.items():
            print(f"  {stage:28s} {sec:6.2f} s  (stage process + DVC's commit of its outputs, in this run)")
        dvc_own = t_exp - sum(stage_s.values())
        print(f"  {'DVC own work (the rest of this run)':28s} {dvc_own:6.2f} s")
        if t_full is not None:
            ratio = t_full / t_exp
            print(f"ratio {ratio:.1f}x (goal >= 20x: {'OK' if ratio >= 20 else 'MISSED'})")
        if not args.no_parts:
            measured = parts(ws)
            for part, sec in measured:
                print(f"  {part:62s} {sec:6.2f} s")
            low = floor(measured, dvc_own + stage_s.get("scan", 0.0))
            print(f"floor with no work and no MLflow (DVC + scan + start-up and imports of both stages): {low:.1f} s"
                  + (f", i.e. at most {t_full / low:.1f}x" if t_full is not None else ""))
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
