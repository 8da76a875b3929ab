"""How long the first seconds of the `mrl` command take: `mrl --help`, `mrl results --help`, `mrl detect --help`.

Each command runs in a fresh interpreter (`pipeline.cli` run as `__main__`, as the `mrl` script does) --repeats
times; prints the median and the fastest wall time of each, and which heavy libraries each one imported.
Goal: `mrl --help` under one second (it imports no heavy library); `mrl detect --help` imports torch and
PyG (its options live beside the code that scores, pipeline/scoring/detect.py).

    python bench/cli_startup.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torch_geometric", "mlflow", "pandas", "h5py", "pydantic", "sklearn")
PROBE = ("import runpy, sys; sys.argv = ['mrl'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('pipeline.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         f"print('IMPORTED', ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bare = []
    for _ in range(args.repeats):  # the floor: an interpreter that imports nothing, on this machine now
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
    print(f"python -c pass       median {statistics.median(bare):6.2f} s, fastest {min(bare):6.2f} s (the floor)")
    for cmd in (["--help"], ["results", "--help"], ["compare", "--help"], ["detect", "--help"]):
        times, imported = [], "?"
        for _ in range(args.repeats):  # the command as `mrl` runs it, reporting what it imported when done
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", PROBE, *cmd], cwd=ROOT, env=env, capture_output=True,
                                 text=True)
            times.append(time.perf_counter() - t0)
            if res.returncode != 0 or "usage: mrl" not in res.stdout:
                raise SystemExit(f"mrl {' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
            imported = next((ln[len("IMPORTED"):].strip() for ln in res.stderr.splitlines()
                             if ln.startswith("IMPORTED")), "?")
        print(f"mrl {' '.join(cmd):16s} median {statistics.median(times):6.2f} s, fastest {min(times):6.2f} s "
              f"({args.repeats} runs); heavy imports: {imported or 'none'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cli_startup: {os.cpu_count()} CPUs, load average {load:.1f}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
