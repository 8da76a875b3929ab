"""The README's MLflow screenshots: the runs list `mrl results` links to, and the compare view of two experiments.

    python scripts/mlflow_screenshots.py --store mlflow.db --out docs/

Starts `mlflow server` on 127.0.0.1 (a free port) on a COPY of the given sqlite store (the server migrates a
store it opens; the copy keeps yours as it is), opens the pages in headless Chromium (`chromium --headless
--screenshot`, as tests/test_mlflow_ui.py does) and writes docs/mlflow_runs.png and docs/mlflow_compare.png.
The compare view shows the two newest parent runs (experiments) unless --runs names two run ids.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import ui_url  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shot(chromium: str, url: str, png: Path, size: str) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", f"--window-size={size}", "--virtual-time-budget=40000",
                    f"--screenshot={png}", url], capture_output=True, text=True, timeout=180, check=True)
    if not png.exists() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"chromium wrote no PNG for {url}")
    print(f"mlflow_screenshots: {png} <- {url}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="mlflow.db", help="the sqlite tracking database (default %(default)s)")
    ap.add_argument("--out", default="docs", help="folder for the PNGs (default %(default)s)")
    ap.add_argument("--runs", nargs=2, metavar="RUN_ID", help="the two parent runs to compare (default: the newest two)")
    ap.add_argument("--experiment", default="mrl")
    args = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("headless Chromium is needed: apt-get install -y chromium")
    if not Path(args.store).is_file():
        raise SystemExit(f"{args.store}: no such sqlite store (run `dvc repro` first, or give --store)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "mlflow.db"
        shutil.copy2(args.store, db)
        uri = f"sqlite:///{db}"
        with sqlite3.connect(db) as con:
            exp_id = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (args.experiment,)).fetchone()
            if exp_id is None:
                raise SystemExit(f"{args.store}: no experiment {args.experiment!r}")
            parents = [r[0] for r in con.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE r.experiment_id = ? "
                "AND t.key = 'mrl.role' AND t.value = 'experiment' AND r.lifecycle_stage = 'active' "
                "ORDER BY r.start_time DESC", (exp_id[0],))]
        runs = args.runs or parents[:2]
        if len(runs) < 2:
            raise SystemExit(f"{args.store}: the compare view needs two experiments, found {len(parents)}")
        port = _free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        log = open(Path(tmp) / "server.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                                 "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                if proc.poll() is not None:
                    raise SystemExit(f"mlflow server exited: {(Path(tmp) / 'server.log').read_text()[-2000:]}")
                try:
                    if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(0.5)
            _shot(chromium, ui_url(uri, args.experiment, base), out / "mlflow_runs.png", "1900,700")
            query = urllib.parse.urlencode({"runs": json.dumps(runs), "experiments": json.dumps([str(exp_id[0])]),
                                            "workflowType": "machine_learning"})
            _shot(chromium, f"{base}/#/compare-runs?{query}", out / "mlflow_compare.png", "1900,1100")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()


if __name__ == "__main__":
    main()
