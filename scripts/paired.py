"""Two settings compared on the same test videos, seed by seed and over the seeds: is A better than B?

    python scripts/paired.py --a mask-full-minimal-00,mask-full-minimal-00-s1,mask-full-minimal-00-s2 \\
                             --b HEAD,crop96-s1,crop96-s2

``--a`` and ``--b`` list runs of the two settings, paired by position (the same training seed in both lists):
each a finished DVC experiment's name (its ``reports/video_scores.csv`` is read from its git ref,
``refs/exps/.../NAME``, the newest of that name), ``HEAD`` (the committed run) or a path to a
``video_scores.csv``. For every pair: the test AUC difference A - B with a paired, label-stratified bootstrap
interval (:func:`pipeline.scoring.paired.paired_bootstrap`, as ``evaluate`` compares MRL with the baseline).
Then the mean difference over the pairs, with the interval of that mean over the SAME video resamples for every
pair: the videos are the unit of the interval, the seeds are averaged (so the interval says how sure the
mean over these seeds is, for these 192 videos, not how a fourth seed would fall).

``--method faceswap`` (or ``demo/faceswap``) compares the runs on one fake family: its fakes against the real
videos of their dataset (the videos that family's AUC in ``evaluate``'s ``per_method`` is computed on), e.g. a
family held out of training against the same family seen in training.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.scoring.metrics import VIDEO_KEY  # noqa: E402
from pipeline.scoring.paired import paired_bootstrap, paired_replicates  # noqa: E402

SCORES = "reports/video_scores.csv"


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def run_scores(run: str, repo: Path = Path(".")) -> pd.DataFrame:
    """The per-video test scores of ``run``: a CSV path, ``HEAD`` (or any commit) or an experiment's name."""
    if Path(run).suffix == ".csv":
        if not Path(run).exists():
            raise SystemExit(f"paired: {run}: no such file")
        return pd.read_csv(run)
    refs = _git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps", cwd=repo).stdout.split()
    named = [r for r in refs if r.rsplit("/", 1)[-1] == run]
    rev = named[0] if named else run
    shown = _git("show", f"{rev}:{SCORES}", cwd=repo)
    if shown.returncode != 0:
        raise SystemExit(f"paired: {run!r} is neither a finished experiment (refs/exps/.../{run}), a commit with "
                         f"{SCORES}, nor a CSV file; `dvc exp show` lists the experiments")
    return pd.read_csv(io.StringIO(shown.stdout))


def one_family(scores: pd.DataFrame, method: str, run: str) -> pd.DataFrame:
    """The fakes of family ``method`` (``METHOD`` or ``DATASET/METHOD``, ``--method``) and the real videos of
    their dataset: the videos ``evaluate``'s ``per_method`` scores that family on
    (:func:`pipeline.scoring.metrics.breakdown`). Refused, naming what ``run`` has, when it holds no fake of that
    family, or when a bare ``METHOD`` has fakes in several datasets."""
    dataset, _, name = method.rpartition("/")
    ds, mt = scores["dataset"].astype(str), scores["method"].astype(str)
    fakes = scores["label"] == 1
    hit = fakes & (mt == name) & ((ds == dataset) if dataset else True)
    if not hit.any():
        have = ", ".join(sorted(set(ds[fakes] + "/" + mt[fakes]))) or "none"
        raise SystemExit(f"paired: {run} has no fake video of method {method!r} (its fake families: {have})")
    where = sorted(set(ds[hit]))
    if len(where) > 1:
        raise SystemExit(f"paired: {run} has {name!r} fakes in datasets {', '.join(where)}; "
                         f"name one, e.g. --method {where[0]}/{name}")
    keep = hit | (~fakes & (ds == where[0]))
    return scores[keep].reset_index(drop=True)


def aligned(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """``a`` and ``b`` joined on the video key, in key order, with ``label``, ``score_a``, ``score_b``; refused
    unless both hold exactly the same videos with the same labels."""
    key = list(VIDEO_KEY)
    m = a[key + ["label", "score"]].merge(b[key + ["label", "score"]], on=key, how="outer", suffixes=("_a", "_b"),
                                           indicator=True)
    if (m["_merge"] != "both").any() or (m["label_a"] != m["label_b"]).any():
        odd = m[(m["_merge"] != "both") | (m["label_a"] != m["label_b"])].iloc[0]
        raise SystemExit(f"paired: {names[0]} and {names[1]} were not scored on the same videos "
                         f"(e.g. {'/'.join(str(odd[k]) for k in key)}); compare runs of one demo and one split")
    m = m.sort_values(key).reset_index(drop=True)
    return pd.DataFrame({"label": m["label_a"].astype(int), "score_a": m["score_a"], "score_b": m["score_b"]})


def pooled_difference(pairs: list[pd.DataFrame], n: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """The mean over ``pairs`` (frames of :func:`aligned`, all on the same videos) of AUC(a) - AUC(b), and its
    percentile interval from the SAME label-stratified video resamples applied to every pair."""
    labels = pairs[0]["label"].to_numpy()
    if any(not np.array_equal(p["label"].to_numpy(), labels) for p in pairs):
        raise SystemExit("paired: the pairs were not scored on the same videos")
    point, reps = [], []
    for p in pairs:
        point.append(paired_bootstrap(labels, p["score_a"].to_numpy(), p["score_b"].to_numpy(), n=0)["diff"])
        ra, rb = paired_replicates(labels, p["score_a"].to_numpy(), p["score_b"].to_numpy(), n=n, seed=seed)
        reps.append(ra - rb)
    d = np.mean(reps, axis=0)
    lo, hi = np.quantile(d, [(1 - ci) / 2, (1 + ci) / 2])
    return {"diff": float(np.mean(point)), "ci": [float(lo), float(hi)], "p_above": float((d > 0).mean()),
            "pairs": len(pairs), "n": int(labels.size)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="runs of setting A, comma-separated (experiment names, HEAD, CSV files)")
    ap.add_argument("--b", required=True, help="runs of setting B, paired with --a by position")
    ap.add_argument("--method", default=None,
                    help="compare on one fake family only (METHOD or DATASET/METHOD): its fakes against the real "
                         "videos of their dataset")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--ci", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (evaluate's is params.yaml's seed)")
    args = ap.parse_args(argv)
    runs_a = [r.strip() for r in args.a.split(",") if r.strip()]
    runs_b = [r.strip() for r in args.b.split(",") if r.strip()]
    if len(runs_a) != len(runs_b) or not runs_a:
        raise SystemExit(f"paired: --a names {len(runs_a)} runs and --b {len(runs_b)}; pair them one to one")
    pairs = []
    pct = round(args.ci * 100)
    for ra, rb in zip(runs_a, runs_b):
        sa, sb = run_scores(ra), run_scores(rb)
        if args.method:
            sa, sb = one_family(sa, args.method, ra), one_family(sb, args.method, rb)
        p = aligned(sa, sb, (ra, rb))
        res = paired_bootstrap(p["label"].to_numpy(), p["score_a"].to_numpy(), p["score_b"].to_numpy(), n=args.bootstrap, ci=args.ci, seed=args.seed)
        print(f"{ra} - {rb}: AUC {res['auc_a']:.3f} - {res['auc_b']:.3f} = {res['diff']:+.3f} "
              f"[{res['ci'][0]:+.3f}, {res['ci'][1]:+.3f}] ({pct} % paired bootstrap on {res['n']} videos), "
              f"A ahead in {res['p_above']:.3f} of resamples")
        pairs.append(p)
    if len(pairs) > 1:
        pooled = pooled_difference(pairs, args.bootstrap, args.ci, args.seed)
        print(f"mean over {pooled['pairs']} pairs: {pooled['diff']:+.3f} [{pooled['ci'][0]:+.3f}, "
              f"{pooled['ci'][1]:+.3f}] (the same {pooled['n']} videos resampled for every pair), A ahead in "
              f"{pooled['p_above']:.3f} of resamples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
