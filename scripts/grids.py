"""The paper's experiment grids as queued DVC experiments, and the reports that compare them.

    python scripts/grids.py queue lofo            # leave-one-family-out: one experiment per fake family
    python scripts/grids.py queue mask            # Fig. 5: minimal/random x rates 0.0..0.9 (relation stage)
    python scripts/grids.py queue mask-full       # the same, also retraining the encoder (Algorithm 2)
    dvc queue start -j 1                          # run them unattended (dvc queue status / logs NAME)
    python scripts/grids.py report lofo           # -> reports/lofo.md (+ reports/mask.png for the mask grids)

Each experiment is ``dvc exp run --queue -n <grid>-<point> -S key=value ...``; DVC re-runs only the stages
whose params changed: ``mask`` re-runs train_relation and evaluate (the crops and the encoder are reused),
``mask-full`` also train_encoder and cache_features, ``lofo`` (``data.holdout_methods``) everything from the
manifest on (crops of unchanged videos are reused). A queue survives an interruption: ``dvc queue start``
again runs what is left. ``report`` reads the finished experiments from ``dvc exp show --json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.ingest.datasets import read_manifest  # noqa: E402
from pipeline.runtime import atomic_path  # noqa: E402

RATES = [round(0.1 * i, 1) for i in range(10)]


def fake_methods(params_file: str = "params.yaml") -> list[str]:
    """The fake families of the configured data: from the manifest when built, else ``demo.methods``."""
    p = yaml.safe_load(Path(params_file).read_text())
    manifest = Path(p.get("data", {}).get("manifest", "data/manifest.csv"))
    if manifest.exists():
        df = read_manifest(manifest)
        return sorted(set(df.loc[df.label == 1, "method"]))
    return list(p.get("demo", {}).get("methods", []))


def grid(name: str) -> list[tuple[str, dict]]:
    """(experiment name, {param: value}) for every point of a grid."""
    if name == "lofo":
        return [(f"lofo-{m}", {"data.holdout_methods": f"[{m}]"}) for m in fake_methods()]
    if name in ("mask", "mask-full"):
        pts = []
        for strategy in ("minimal", "random"):
            for r in RATES:
                sets = {"mask.strategy": strategy, "mask.rate": r}
                if name == "mask-full":
                    sets.update({"train_encoder.mask.strategy": strategy, "train_encoder.mask.rate": r})
                pts.append((f"{name}-{strategy}-{str(r).replace('.', '')}", sets))
        return pts
    raise SystemExit(f"unknown grid {name!r} (lofo, mask, mask-full)")


def queue(name: str, dry: bool = False) -> None:
    for exp, sets in grid(name):
        cmd = [sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", exp] + [a for k, v in sets.items() for a in ("-S", f"{k}={v}")]
        print(" ".join(cmd))
        if not dry:
            subprocess.run(cmd, check=True)
    print(f"grids: queued {len(grid(name))} experiments; run them with `dvc queue start -j 1`")


def finished_experiments(show: list) -> dict:
    """name -> data of every FINISHED experiment in ``dvc exp show --json`` output (DVC 3.x: a list of
    baseline revisions, each with ``experiments``: ``{name, executor: {state}, revs: [{name, data}]}``;
    queued, running and failed ones are left out; of two experiments with one name, the newer)."""
    out = {}
    for base in show:
        for exp in base.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            if state in ("queued", "running", "failed") or not exp.get("revs"):
                continue
            rev = exp["revs"][0]
            if rev.get("error") or not isinstance(rev.get("data"), dict):
                continue
            name = exp.get("name") or rev.get("name")
            if name not in out or str(rev["data"].get("timestamp") or "") > str(out[name].get("timestamp") or ""):
                out[name] = rev["data"]  # a name queued again (on another commit): the newest run counts
    return out


def finished(prefix: str) -> dict:
    # --all-commits: experiments stay attached to the commit they were queued on
    res = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--all-commits"], check=True,
                         capture_output=True, text=True)
    exps = finished_experiments(json.loads(res.stdout))
    return {k: v for k, v in exps.items() if k and k.startswith(prefix + "-")}


def _metric(data: dict, file: str) -> dict:
    return ((data.get("metrics") or {}).get(file) or {}).get("data") or {}


def _params(data: dict) -> dict:
    return ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}


def _by_method(per_method: dict, method: str):
    """The entry of ``method`` in a per-method breakdown keyed ``dataset/method`` (or ``method``)."""
    for key, value in per_method.items():
        if key == method or key.endswith("/" + method):
            return value
    return {} if per_method and isinstance(next(iter(per_method.values())), dict) else None


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def report(name: str, out_dir: Path = Path("reports")) -> Path:
    exps = finished(name)
    if not exps:
        raise SystemExit(f"no finished experiments named {name}-*: queue them and run `dvc queue start`")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name}: {len(exps)} experiments", ""]
    if name == "lofo":
        lines += ["| held-out family | its test AUC (unseen) | videos | overall test AUC [95% CI] | baseline test AUC |",
                  "|---|---|---|---|---|"]
        for exp in sorted(exps):
            data = exps[exp]
            held = _params(data).get("data", {}).get("holdout_methods", ["?"])[0]
            ev = _metric(data, "metrics/evaluate.json")
            m = _by_method(ev.get("per_method") or {}, held)
            t = ev.get("test", {})
            base = _by_method(_metric(data, "metrics/baseline.json").get("test_per_method") or {}, held)
            lines.append(f"| {held} | {fmt(m.get('auc'))} | {m.get('n', 'n/a')} | {fmt(t.get('auc'))} "
                         f"[{fmt(t.get('auc_ci_low'))}, {fmt(t.get('auc_ci_high'))}] | {fmt(base)} |")
    else:
        rows = []
        for exp, data in exps.items():
            p, t = _params(data), _metric(data, "metrics/evaluate.json").get("test", {})
            rows.append((p["mask"]["strategy"], float(p["mask"]["rate"]), t.get("auc"), t.get("auc_ci_low"),
                         t.get("auc_ci_high"), t.get("n")))
        rows.sort()
        lines += ["| strategy | rate | test AUC | 95% CI | videos |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {r} | {fmt(a)} | [{fmt(lo)}, {fmt(hi)}] | {n} |" for s, r, a, lo, hi, n in rows]
        _plot(rows, out_dir / f"{name}.png", name)
        lines += ["", f"![AUC against masking rate]({name}.png)"]
    md = out_dir / f"{name}.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"grids: {md}")
    return md


def _plot(rows, path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for strategy in sorted({r[0] for r in rows}):
        pts = [r for r in rows if r[0] == strategy and r[2] is not None]
        x = [r[1] for r in pts]
        ax.plot(x, [r[2] for r in pts], marker="o", label=strategy)
        ax.fill_between(x, [r[3] if r[3] is not None else r[2] for r in pts],
                        [r[4] if r[4] is not None else r[2] for r in pts], alpha=0.2)
    ax.set_xlabel("masking rate p")
    ax.set_ylabel("test video AUC (95% bootstrap band)")
    ax.set_title(title)
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["queue", "report", "list"])
    ap.add_argument("grid", choices=["lofo", "mask", "mask-full"])
    args = ap.parse_args(argv)
    if args.action == "list":
        for exp, sets in grid(args.grid):
            print(exp, sets)
    elif args.action == "queue":
        queue(args.grid)
    else:
        report(args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
