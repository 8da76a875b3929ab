"""DVC stage ``track`` (always runs, seconds): the MLflow store follows the workspace, whatever DVC skipped.

DVC skips a stage whose inputs hash as committed (in a fresh clone: ``evaluate`` and ``baseline`` after the
training stages reproduce their models), so that stage logs nothing here, and the run ids recorded in git
(``runs/<stage>/mlflow_run.json``) name runs of another machine's store. This stage runs last, after every
stage that writes a ``metrics/*.json``, and calls :func:`pipeline.tracking.sync_workspace`: the experiment's
parent run gets the test metrics and intervals of every metrics file, and each tracked stage's run is in the
local store (created from the committed outputs, tagged ``mrl.restored_from``, when the stage did not run
here). It writes nothing DVC tracks.

    python -m pipeline.stages.track [--params params.yaml]
"""
from __future__ import annotations

import argparse

from pipeline.params import load_params
from pipeline.runtime import exit_now
from pipeline.tracking import sync_workspace, tracking_uri

STAGE = "track"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    p = load_params(ap.parse_args(argv).params)
    res = sync_workspace(p, p.mlflow)
    made = f"; made from the committed outputs: {', '.join(res['restored'])}" if res["restored"] else ""
    print(f"track: MLflow run {res['name']!r} ({res['parent']}) has the workspace's results "
          f"({res['metrics']} metrics updated; stage runs: {', '.join(res['stages']) or 'none'}{made}) "
          f"in {tracking_uri(p.mlflow.tracking_uri)}")


if __name__ == "__main__":
    exit_now(main())
