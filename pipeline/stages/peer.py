"""DVC stage ``peer``: a published detector on the same test videos as MRL and the baseline, frozen, never trained
here: MesoNet's Meso-4 (Afchar et al., WIFS 2018) with the authors' weights (``peer.weights``), on 256 px faces
cut from the videos around the crop stage's MTCNN boxes (:mod:`pipeline.scoring.peer`).

Writes ``metrics/peer.json`` (test video AUC with its bootstrap interval, per family with intervals, counts of
videos and people: the layout of ``metrics/baseline.json``) and ``reports/peer_scores.csv`` (one row per test
video, which ``evaluate`` pairs with MRL's).

    python -m pipeline.stages.peer [--params params.yaml]
"""
from __future__ import annotations

import argparse
import sys

from peer_models.mesonet import INPUT_SIZE, WeightsError, load_meso4
from pipeline import paths
from pipeline.params import ParamsError, load_params
from pipeline.runtime import exit_now, resolve_device, seed_everything, write_csv, write_json
from pipeline.scoring.paired import detector_summary, video_identities
from pipeline.scoring.peer import PeerError, score_videos

STAGE = "peer"
MODEL = "MesoNet Meso-4 (Afchar et al., WIFS 2018), the authors' published weights, frozen"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        p = load_params(args.params)
        seed_everything(p.seed)
        model = load_meso4(p.peer.weights).to(resolve_device(p.device))
        vids = score_videos(p.crop.out_dir, model, "test", p.peer.frames, p.peer.margin, not args.no_progress)
        summary = detector_summary(vids, video_identities(p.crop.out_dir), p.evaluate.bootstrap, p.evaluate.ci,
                                   p.seed)
    except (ParamsError, WeightsError, PeerError, FileNotFoundError, ValueError) as exc:
        print(f"peer: FAILED: {exc}", file=sys.stderr)
        return 2
    res = {"model": MODEL, "weights": p.peer.weights, "frames_per_video": p.peer.frames, "margin": p.peer.margin,
           "image_size": INPUT_SIZE, **summary}
    write_csv(vids, paths.PEER_SCORES)
    write_json(res, paths.metrics_file(STAGE))
    t = res["test"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"peer ({p.peer.weights}, {p.peer.frames} frames per video at {INPUT_SIZE} px): test AUC {fmt(t['auc'])} "
          f"[{fmt(t['auc_ci_low'])}, {fmt(t['auc_ci_high'])}] on {t['n']} videos of {t['n_people']} people -> "
          f"{paths.metrics_file(STAGE)}, {paths.PEER_SCORES}")
    return 0


if __name__ == "__main__":
    exit_now(main())
