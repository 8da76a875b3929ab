"""The paper's experiment grids as queued DVC experiments, and the reports that compare them.

    python scripts/grids.py queue lofo            # leave-one-family-out: one experiment per fake family
    python scripts/grids.py queue mask            # Fig. 5: minimal/random x rates 0.0..0.9 (relation stage)
    python scripts/grids.py queue mask-full       # the same, also retraining the encoder (Algorithm 2)
    python scripts/grids.py queue ablation        # Table IV/V ablations (STA off, graph off, ... image-based)
    python scripts/grids.py queue curve           # learning curve: 5, 10, 20, 40, all training identities
                                                  #   x seeds 0-2 x backbones mobilenet_v2, small3d (30 runs)
    python scripts/grids.py queue mask-full --only minimal-00,minimal-05   # a subset of a grid's points
    python scripts/grids.py table ablation        # which params each point sets and which stages it re-runs
    dvc queue start -j 1                          # run them unattended (dvc queue status / logs NAME)
    python scripts/grids.py report lofo           # -> reports/lofo.md (+ reports/mask.png for the mask grids)
                                                  #    (+ reports/<grid>_auc.csv, read by dvc.yaml's plots)
    python scripts/grids.py report curve --rev ee0af21 --alias crop96=mobilenetv2-all-s0
                                  # only the experiments of these commits (fast); a run of another name as a point
    python scripts/grids.py report curve --rev 44bb323 --runs reports/epyc/curve_runs.csv --out reports/epyc
                                  # with the runs an earlier report recorded (their experiments live elsewhere)

Each experiment is ``dvc exp run --queue -n <grid>-<point> -S key=value ...``; DVC re-runs only the stages
whose params changed: ``mask`` re-runs train_relation and evaluate (the crops and the encoder are reused),
``mask-full`` also train_encoder and cache_features, ``lofo`` (``data.holdout_methods``) and ``curve``
(``data.train_identities``) everything from the manifest on (the crop stage reuses every video's crop); ``ablation``: :func:`stages_rerun` computes it from
dvc.yaml for each point (``table ablation``; the README's table is checked against it). A queue survives an interruption: ``dvc queue start``
again runs what is left. ``report`` reads the finished experiments from ``dvc exp show --json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compare import committed as _committed  # noqa: E402  (dvc exp show readers, shared with mrl compare)
from pipeline.compare import finished_experiments  # noqa: E402,F401
from pipeline.compare import metric as _metric  # noqa: E402
from pipeline.compare import params_of as _params  # noqa: E402
from pipeline.ingest.datasets import read_manifest  # noqa: E402
from pipeline.runtime import atomic_path  # noqa: E402

RATES = [round(0.1 * i, 1) for i in range(10)]
CURVE = [5, 10, 20, 40, None]   # training identities (None: all); nested sets (pipeline.ingest.datasets)
CURVE_SEEDS = [0, 1, 2]          # `seed` draws the subset and initialises the models: the spread of a point
CURVE_BACKBONES = ["mobilenet_v2", "small3d"]

# Table IV / V of the paper (and Fig. 7's snippet length D at a fixed frame count), each as params.yaml
# overrides. The encoder is trained jointly with its own relation head (train_encoder.relation / .mask):
# "graph off" and "masking none" switch both heads, as the paper trains one model; "mask in inference"
# changes the relation stage only (the encoder's head is used for training only).
ABLATIONS: list[tuple[str, str, dict]] = [
    ("full", "the full model (default params)", {}),
    ("sta-off", "STA off (attention maps of ones; Table V)", {"encoder.sta": "false"}),
    ("graph-off", "graph off (vertices averaged over snippets; Table V)",
     {"relation.cell": "none", "train_encoder.relation.cell": "none"}),
    ("mask-none", "masking none (Table IV)", {"mask.strategy": "none", "train_encoder.mask.strategy": "none"}),
    ("mask-in-inference", "mask also drawn at evaluation (RQ2)", {"mask.in_inference": "true"}),
    ("max-pooling", "max pooling in Eq. 3 (Table IV)", {"encoder.pooling": "max"}),
    ("no-lod", "without L_od (Table IV)", {"train_encoder.lambda_od": 0}),
    ("no-ltc", "without L_tc (Table IV)", {"train_encoder.lambda_tc": 0}),
    ("heads-4", "N = 4 heads", {"encoder.heads": 4}),
    ("heads-8", "N = 8 heads", {"encoder.heads": 8}),
    ("heads-16", "N = 16 heads", {"encoder.heads": 16}),
    ("snippet-4", "D = 4 frames per snippet at clip.frames 32 (T = 8)", {"clip.snippet_length": 4}),
    ("snippet-16", "D = 16 frames per snippet at clip.frames 32 (T = 2)", {"clip.snippet_length": 16}),
    ("spatial-attention", "spatial-only attention (Table IV)", {"encoder.attention": "spatial"}),
    ("image-based", "image-based variant: ResNet-18 per frame", {"encoder.backbone": "resnet18_2d"}),
]


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
    if name == "ablation":
        return [(f"ablation-{short}", sets) for short, _, sets in ABLATIONS]
    if name == "curve":
        return [(f"curve-{b.replace('_', '')}-{k or 'all'}-s{seed}",
                 {"encoder.backbone": b, "data.train_identities": "null" if k is None else k, "seed": seed})
                for b in CURVE_BACKBONES for k in CURVE for seed in CURVE_SEEDS]
    raise SystemExit(f"unknown grid {name!r} ({', '.join(GRIDS)})")


GRIDS = ("lofo", "mask", "mask-full", "ablation", "curve")


def select(points: list[tuple[str, dict]], name: str, only: str | None) -> list[tuple[str, dict]]:
    """The points of grid ``name`` whose names (without the ``<grid>-`` prefix) are listed in ``only``."""
    if not only:
        return points
    want = [w.strip() for w in only.split(",") if w.strip()]
    names = {exp[len(name) + 1:]: (exp, sets) for exp, sets in points}
    unknown = [w for w in want if w not in names]
    if unknown:
        raise SystemExit(f"--only: no point {unknown} in grid {name}; its points: {', '.join(names)}")
    return [names[w] for w in want]


def _under(a: str, b: str) -> bool:
    """``a`` is path ``b`` or inside it."""
    return a == b or a.startswith(b.rstrip("/") + "/")


def _paths(entries) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def stages_rerun(sets: dict, dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The stages a change of the params keys in ``sets`` re-runs, in dvc.yaml order: those listing the key
    (or a section above it) under ``params``, and every stage downstream of them (a dep inside an output,
    or an output inside a dep). An empty ``sets`` re-runs nothing. The always-run stages (``scan``, ``track``)
    are left out: they run at every ``dvc exp run``, whatever changed."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    hit = [n for n, st in stages.items()
           if any(isinstance(p, str) and (_under(k.replace(".", "/"), p.replace(".", "/")))
                  for k in sets for p in st.get("params") or [])]
    changed = set(hit)
    grew = True
    while grew:
        outs = [o for n in changed for key in ("outs", "metrics", "plots") for o in _paths(stages[n].get(key))]
        new = {n for n, st in stages.items() if n not in changed
               and any(_under(d, o) or _under(o, d) for d in _paths(st.get("deps")) for o in outs)}
        changed |= new
        grew = bool(new)
    return [n for n in stages if n in changed and not stages[n].get("always_changed")]  # scan, track: always


def ablation_table(dvc_yaml: Path = Path("dvc.yaml")) -> str:
    """The README's table: each ablation, its ``-S`` overrides and the stages it re-runs."""
    rows = ["| experiment | ablation | `dvc exp run -S` | re-runs |", "|---|---|---|---|"]
    for short, what, sets in ABLATIONS:
        over = " ".join(f"`{k}={v}`" for k, v in sets.items()) or "-"
        rows.append(f"| ablation-{short} | {what} | {over} | {', '.join(stages_rerun(sets, dvc_yaml)) or 'none'} |")
    return "\n".join(rows)


def queue(name: str, dry: bool = False, only: str | None = None) -> None:
    points = select(grid(name), name, only)
    for exp, sets in points:
        cmd = [sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", exp] + [a for k, v in sets.items() for a in ("-S", f"{k}={v}")]
        print(" ".join(cmd))
        if not dry:
            subprocess.run(cmd, check=True)
    print(f"grids: queued {len(points)} experiments; run them with `dvc queue start -j 1`")


def read_finished(revs: list[str] | None = None) -> dict:
    """Every finished experiment DVC knows, by name (:func:`finished_experiments`: of two with one name, the
    newer). ``revs``: only those queued on these commits, one ``dvc exp show --json --rev REV`` each: much
    faster in a repository with a long history than the default ``--all-commits`` (experiments stay attached
    to the commit they were queued on, so a grid run over several commits needs each of them)."""
    show: list = []
    for args in [["--rev", r] for r in revs or []] or [["--all-commits"]]:
        res = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", *args], capture_output=True,
                             text=True)
        if res.returncode != 0:
            why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
            raise SystemExit(f"grids: `dvc exp show --json {' '.join(args)}` failed: {why}")
        show += json.loads(res.stdout)
    return finished_experiments(show)


def parse_aliases(items: list[str] | None) -> dict[str, str]:
    """``["crop96=mobilenetv2-all-s0", ...]`` -> ``{"crop96": "mobilenetv2-all-s0"}`` (the ``--alias`` option)."""
    out: dict[str, str] = {}
    for item in items or []:
        src, sep, point = item.partition("=")
        if not sep or not src.strip() or not point.strip():
            raise SystemExit(f"--alias {item!r}: write EXPERIMENT=POINT, e.g. --alias crop96=mobilenetv2-all-s0")
        out[src.strip()] = point.strip()
    return out


def grid_experiments(name: str, exps: dict, aliases: dict[str, str] | None = None) -> dict:
    """The experiments of grid ``name`` among ``exps`` (exactly its experiment names: ``mask`` is not
    ``mask-full``), plus ``aliases``: a finished experiment queued under another name that ran a point of the
    grid (``{"crop96": "mobilenetv2-all-s0"}`` reads crop96 as ``curve-mobilenetv2-all-s0``)."""
    names = {exp for exp, _ in grid(name)}
    out = {k: v for k, v in exps.items() if k in names}
    for src, point in (aliases or {}).items():
        target = f"{name}-{point}"
        if target not in names:
            raise SystemExit(f"--alias {src}={point}: no point {point!r} in grid {name} "
                             f"(`python scripts/grids.py list {name}` lists them)")
        if src not in exps:
            raise SystemExit(f"--alias {src}={point}: no finished experiment named {src!r} in the revisions read; "
                             "pass the commit it was queued on with --rev")
        if target in out:
            raise SystemExit(f"--alias {src}={point}: {target} itself has finished; drop the alias")
        out[target] = exps[src]
    return out


def finished(name: str, revs: list[str] | None = None, aliases: dict[str, str] | None = None) -> dict:
    """The finished experiments of grid ``name`` (:func:`read_finished`, :func:`grid_experiments`)."""
    return grid_experiments(name, read_finished(revs), aliases)


def _by_method(per_method: dict, method: str):
    """The entry of ``method`` in a per-method breakdown keyed ``dataset/method`` (or ``method``)."""
    for key, value in per_method.items():
        if key == method or key.endswith("/" + method):
            return value
    return {} if per_method and isinstance(next(iter(per_method.values())), dict) else None


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def report(name: str, out_dir: Path = Path("reports"), exps: dict | None = None,
           aliases: dict[str, str] | None = None, runs: list[Path] | None = None) -> Path:
    """``out_dir/<name>.md`` (and the PNG / CSV of the grid) from its finished experiments (default: read
    from ``dvc exp show``; ``exps``: name -> the experiment's data, as :func:`finished_experiments` gives).
    ``aliases`` (experiment -> point, already applied to ``exps``) are listed under the title. ``runs`` (curve
    only): ``curve_runs.csv`` files of earlier reports, whose runs join the experiments' (:func:`earlier_runs`)."""
    exps = finished(name) if exps is None else exps
    if runs and name != "curve":
        raise SystemExit(f"--runs reads a learning curve's curve_runs.csv; the {name} report takes experiments only")
    earlier = [r for path in runs or [] for r in read_curve_runs(path)]
    if not exps and not earlier:
        raise SystemExit(f"no finished experiments named {name}-*: queue them and run `dvc queue start`")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name}: {len(exps)} experiments", ""]
    if aliases:
        lines += ["Read under another name: " + ", ".join(f"{src} as {name}-{point}"
                                                           for src, point in sorted(aliases.items())), ""]
    if name == "lofo":
        lines += ["| held-out family | its test AUC (unseen) [95% CI] | videos (fake + real) | overall test AUC [95% CI] "
                  "| baseline, same family |", "|---|---|---|---|---|"]
        for exp in sorted(exps):
            data = exps[exp]
            held = _params(data).get("data", {}).get("holdout_methods", ["?"])[0]
            ev = _committed(data, "metrics/evaluate.json")
            m = _by_method(ev.get("per_method") or {}, held)
            t = ev.get("test", {})
            base = _by_method(_metric(data, "metrics/baseline.json").get("test_per_method") or {}, held)
            low, high = m.get("auc_ci") or (None, None)  # older experiments have no per-family interval
            size = f"{m['n_pos']} + {m['n_neg']}" if "n_pos" in m else m.get("n", "n/a")
            lines.append(f"| {held} | {fmt(m.get('auc'))} [{fmt(low)}, {fmt(high)}] | {size} | {fmt(t.get('auc'))} "
                         f"[{fmt(t.get('auc_ci_low'))}, {fmt(t.get('auc_ci_high'))}] | {fmt(base)} |")
    elif name == "ablation":
        order = {f"ablation-{short}": (i, what) for i, (short, what, _) in enumerate(ABLATIONS)}
        evals = {exp: _committed(data, "metrics/evaluate.json") for exp, data in exps.items()}  # one git show each
        families = sorted({key.split("/")[-1] for ev in evals.values() for key in (ev.get("per_method") or {})})
        lines += ["| experiment | ablation | encoder val AUC | test AUC | 95% CI | ACC | EER | videos | "
                  + "".join(f"{f} | " for f in families) + "MRL - baseline [95% CI] |",
                  "|---" * (9 + len(families)) + "|"]
        csv_rows = []
        for exp in sorted(exps, key=lambda e: order[e][0]):
            t = _metric(exps[exp], "metrics/evaluate.json").get("test", {})
            ev = evals[exp]
            fam = "".join(f"{fmt((_by_method(ev.get('per_method') or {}, f) or {}).get('auc'))} | " for f in families)
            vb = ev.get("vs_baseline") or {}
            lo, hi = vb.get("ci") or (None, None)
            diff = "n/a" if vb.get("diff") is None else f"{vb['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            val = _metric(exps[exp], "metrics/train_encoder.json").get("val_auc")
            lines.append(f"| {exp} | {order[exp][1]} | {fmt(val)} | {fmt(t.get('auc'))} | [{fmt(t.get('auc_ci_low'))}, "
                         f"{fmt(t.get('auc_ci_high'))}] | {fmt(t.get('acc'))} | {fmt(t.get('eer'))} | {t.get('n')} | "
                         f"{fam}{diff} |")
            csv_rows.append({"ablation": exp[len("ablation-"):], "auc": t.get("auc"),
                             "auc_ci_low": t.get("auc_ci_low"), "auc_ci_high": t.get("auc_ci_high")})
        _write_csv(csv_rows, out_dir / f"{name}_auc.csv")
    elif name == "curve":
        rows = earlier_runs(curve_rows(exps), earlier)
        if len(rows) > len(exps):
            lines += [f"With {len(rows) - len(exps)} runs of earlier reports ({', '.join(str(p) for p in runs)}): "
                      f"{len(rows)} runs in all.", ""]
        lines += curve_report(exps, out_dir, rows)
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
        _write_csv(_wide(rows), out_dir / f"{name}_auc.csv")
        lines += ["", f"![AUC against masking rate]({name}.png)"]
    md = out_dir / f"{name}.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"grids: {md}")
    return md


def log_fit(ks: list[float], aucs: list[float]) -> tuple[float, float]:
    """Least-squares ``auc = a + b * ln(k)`` (a learning curve's usual shape at small sizes)."""
    x = np.log(np.asarray(ks, float))
    y = np.asarray(aucs, float)
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


NEEDED_MAX = 1e7   # a crossing beyond ten million people is a flat fit, not a prediction


def identities_needed(a: float, b: float, target: float) -> float | None:
    """The ``k`` at which ``a + b ln k`` reaches ``target`` (None when the fit does not rise, or rises so
    slowly that the crossing lies beyond :data:`NEEDED_MAX` people: a flat curve at chance)."""
    if b <= 1e-9:
        return None
    ln_k = (target - a) / b
    return float(np.exp(ln_k)) if ln_k <= np.log(NEEDED_MAX) else None


def _run_order(r: dict) -> tuple:
    """Curve runs by backbone, then size (all people last), then seed."""
    return str(r["backbone"]), r["identities"] or 0, r["seed"] if r["seed"] is not None else -1


def curve_rows(exps: dict) -> list[dict]:
    """One row per finished curve experiment: backbone, seed, training identities, MRL and baseline test AUC."""
    rows = []
    for exp, data in exps.items():
        enc = _metric(data, "metrics/train_encoder.json")
        enc = enc.get("run") or enc  # the run's facts are nested under "run" (flat in older experiments)
        t = _metric(data, "metrics/evaluate.json").get("test", {})
        base = _metric(data, "metrics/baseline.json").get("test", {})
        p = _params(data)
        k = (p.get("data") or {}).get("train_identities")
        rows.append(dict(identities=k if k is not None else enc.get("train_identities"), all=k is None,
                         backbone=(p.get("encoder") or {}).get("backbone", "?"), seed=p.get("seed"),
                         train_windows=enc.get("train_windows"), auc=t.get("auc"), auc_ci_low=t.get("auc_ci_low"),
                         auc_ci_high=t.get("auc_ci_high"), videos=t.get("n"), baseline_auc=base.get("auc")))
    rows.sort(key=_run_order)
    return rows


_RUN_KEY = ("backbone", "identities", "all", "seed")


def read_curve_runs(path: Path) -> list[dict]:
    """The runs of an earlier curve report (its ``curve_runs.csv``, as :func:`curve_rows` wrote them), typed
    again: the record of runs whose experiments live in another clone or on another machine."""
    import csv

    if not Path(path).is_file():
        raise SystemExit(f"--runs {path}: no such file (a curve report's curve_runs.csv)")

    def num(v, kind):
        return None if v in ("", None) else kind(v)

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("identities", "all", "backbone", "seed", "auc") if rows and c not in rows[0]]
    if missing:
        raise SystemExit(f"--runs {path}: not a curve_runs.csv (no column {', '.join(missing)})")
    return [dict(identities=num(r["identities"], int), all=r["all"] == "True", backbone=r["backbone"],
                 seed=num(r["seed"], int), train_windows=num(r.get("train_windows"), int),
                 auc=num(r["auc"], float), auc_ci_low=num(r.get("auc_ci_low"), float),
                 auc_ci_high=num(r.get("auc_ci_high"), float), videos=num(r.get("videos"), int),
                 baseline_auc=num(r.get("baseline_auc"), float)) for r in rows]


def earlier_runs(rows: list[dict], earlier: list[dict]) -> list[dict]:
    """``rows`` (this report's experiments) plus the ``earlier`` runs of points and seeds they do not have
    (an experiment wins over an earlier record of the same backbone, size and seed), in :func:`_run_order`."""
    have = {tuple(r[k] for k in _RUN_KEY) for r in rows}
    out = list(rows)
    for r in earlier:
        key = tuple(r[k] for k in _RUN_KEY)
        if key not in have:
            have.add(key)
            out.append(r)
    out.sort(key=_run_order)
    return out


def curve_points(rows: list[dict]) -> list[dict]:
    """The rows grouped by (backbone, identities): the seeds' mean, minimum and maximum of MRL's and the
    baseline's test AUC (the spread of a point over seeds, which draw both the subset and the initialisation)."""
    groups: dict = {}
    for r in rows:
        if r["identities"] and r["auc"] is not None:
            groups.setdefault((str(r["backbone"]), r["identities"]), []).append(r)
    pts = []
    for (backbone, k), rs in sorted(groups.items()):
        auc = [r["auc"] for r in rs]
        base = [r["baseline_auc"] for r in rs if r["baseline_auc"] is not None]
        pts.append(dict(backbone=backbone, identities=k, all=any(r["all"] for r in rs), seeds=len(rs),
                        train_windows=rs[0]["train_windows"], auc_mean=float(np.mean(auc)), auc_min=min(auc),
                        auc_max=max(auc), baseline_mean=float(np.mean(base)) if base else None,
                        baseline_min=min(base) if base else None, baseline_max=max(base) if base else None,
                        videos=rs[0]["videos"]))
    return pts


def _fit_line(label: str, ks: list, aucs: list, seeds: list) -> str:
    """One sentence: the pooled log fit of ``aucs`` against ``ks`` and where it reaches 0.90, with the range of
    that crossing over the per-seed fits."""
    a, b = log_fit(ks, aucs)
    need = identities_needed(a, b, 0.90)
    per_seed = []
    for sd in sorted(set(seeds), key=str):
        kk = [k for k, s_ in zip(ks, seeds) if s_ == sd]
        yy = [y for y, s_ in zip(aucs, seeds) if s_ == sd]
        if len(set(kk)) >= 3:
            per_seed.append(identities_needed(*log_fit(kk, yy), 0.90))
    crossing = (f"it reaches 0.90 at about {need:.0f} training identities" if need
                else "it does not rise measurably with more identities, so it predicts no size that reaches 0.90")
    if per_seed:
        finite = [x for x in per_seed if x is not None]
        crossing += (f" (per seed: {', '.join(f'{x:.0f}' for x in finite) or 'none'}"
                     + (f"; {len(per_seed) - len(finite)} seed(s) not rising measurably" if len(finite) < len(per_seed) else "")
                     + ")")
    return f"- {label}: test AUC = {a:.3f} + {b:.3f} ln(identities) over {len(ks)} runs; {crossing}."


def curve_report(exps: dict, out_dir: Path, rows: list[dict] | None = None) -> list[str]:
    """Table, CSVs and PNG of test AUC against the number of training identities, per backbone, with the
    baseline (hand-made features, same training subset), the seeds' spread, and log fits extrapolated to 0.90.
    ``rows``: the runs to draw (default: :func:`curve_rows` of ``exps``)."""
    rows = curve_rows(exps) if rows is None else rows
    pts = curve_points(rows)
    lines = ["| backbone | training identities | training windows | seeds | MRL test AUC, mean [min, max] | "
             "baseline test AUC, mean [min, max] | test videos |", "|---|---|---|---|---|---|---|"]
    for r in pts:
        k = f"{r['identities']} (all)" if r["all"] else r["identities"]
        lines.append(f"| {r['backbone']} | {k} | {r['train_windows']} | {r['seeds']} | {fmt(r['auc_mean'])} "
                     f"[{fmt(r['auc_min'])}, {fmt(r['auc_max'])}] | {fmt(r['baseline_mean'])} "
                     f"[{fmt(r['baseline_min'])}, {fmt(r['baseline_max'])}] | {r['videos']} |")
    fits = []
    for backbone in sorted({r["backbone"] for r in pts}):
        rs = [r for r in rows if str(r["backbone"]) == backbone and r["identities"] and r["auc"] is not None]
        if len({r["identities"] for r in rs}) >= 3:
            fits.append(_fit_line(f"MRL, {backbone}", [r["identities"] for r in rs], [r["auc"] for r in rs],
                                  [r["seed"] for r in rs]))
    base = [r for r in rows if r["identities"] and r["baseline_auc"] is not None]
    # the baseline does not depend on the backbone: one fit over the runs of one backbone (its subsets and seeds)
    if base:
        first = sorted({str(r["backbone"]) for r in base})[0]
        bs = [r for r in base if str(r["backbone"]) == first]
        if len({r["identities"] for r in bs}) >= 3:
            fits.append(_fit_line("baseline (hand-made features)", [r["identities"] for r in bs],
                                  [r["baseline_auc"] for r in bs], [r["seed"] for r in bs]))
    if fits:
        lines += ["", "Log fits (least squares over every run, the seeds pooled):", *fits]
    _write_csv(rows, out_dir / "curve_runs.csv")
    _write_csv(pts, out_dir / "curve_points.csv")
    _write_csv(_curve_wide(pts), out_dir / "curve_auc.csv")
    _plot_curve(pts, out_dir / "curve.png")
    return lines + ["", "![test AUC against training identities](curve.png)"]


def _axes():
    """A figure (no pyplot state) and its one axes, with the chance line drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    return fig, ax


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _curve_wide(pts: list[dict]) -> list[dict]:
    """One row per number of identities: the seeds' mean test AUC of MRL per backbone (``mrl_<backbone>``) and
    of the baseline (what dvc.yaml's ``report_curve`` plot draws, one line per column)."""
    wide: dict = {}
    for r in pts:
        row = wide.setdefault(r["identities"], {"identities": r["identities"]})
        row[f"mrl_{r['backbone']}"] = r["auc_mean"]
        if r["baseline_mean"] is not None:
            row.setdefault("baseline", r["baseline_mean"])
    # every backbone of the grid gets its column, run or not (dvc.yaml's plot names them all)
    cols = ["identities", *dict.fromkeys([f"mrl_{b}" for b in CURVE_BACKBONES]
                                         + sorted(f"mrl_{r['backbone']}" for r in pts)), "baseline"]
    return _padded(wide, cols)


def _plot_curve(pts: list[dict], path: Path) -> None:
    fig, ax = _axes()
    for i, backbone in enumerate(sorted({r["backbone"] for r in pts})):
        rs = [r for r in pts if r["backbone"] == backbone]
        x = [r["identities"] for r in rs]
        line, = ax.plot(x, [r["auc_mean"] for r in rs], marker="o", label=f"MRL, {backbone}")
        ax.fill_between(x, [r["auc_min"] for r in rs], [r["auc_max"] for r in rs], alpha=0.2,
                        color=line.get_color())
        if i == 0 and all(r["baseline_mean"] is not None for r in rs):
            ax.plot(x, [r["baseline_mean"] for r in rs], marker="s", ls=":", color="black",
                    label="hand-made features")
    ax.axhline(0.9, color="green", lw=0.5, ls="--")
    ax.set_xscale("log")
    ticks = sorted({r["identities"] for r in pts})
    ax.set_xticks(ticks, [str(t) for t in ticks])   # the measured sizes, plain numbers (not 3x10^1)
    ax.minorticks_off()
    ax.set_xlabel("distinct training identities (log scale)")
    ax.set_ylabel("test video AUC (band: min-max over seeds)")
    ax.set_title("learning curve")
    ax.legend()
    _save_png(fig, path)


def _wide(rows) -> list[dict]:
    """One row per rate, one AUC column per strategy (what dvc.yaml's plots draw as one line per strategy)."""
    by_rate: dict = {}
    for strategy, rate, auc, *_ in rows:
        by_rate.setdefault(rate, {"rate": rate})[strategy] = auc
    # both strategies of the grid get their column, run or not (dvc.yaml's plot names them)
    cols = ["rate", *dict.fromkeys(["minimal", "random"] + sorted({r[0] for r in rows}))]
    return _padded(by_rate, cols)


def _padded(rows_by_key: dict, cols: list[str]) -> list[dict]:
    """The rows in the order of their keys, each with exactly the columns ``cols`` (None where a row has no
    value): a CSV whose every column a dvc.yaml plot can name, whichever points have run."""
    return [{c: rows_by_key[k].get(c) for c in cols} for k in sorted(rows_by_key)]


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv

    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _plot(rows, path: Path, title: str) -> None:
    fig, ax = _axes()
    for strategy in sorted({r[0] for r in rows}):
        pts = [r for r in rows if r[0] == strategy and r[2] is not None]
        x = [r[1] for r in pts]
        ax.plot(x, [r[2] for r in pts], marker="o", label=strategy)
        ax.fill_between(x, [r[3] if r[3] is not None else r[2] for r in pts],
                        [r[4] if r[4] is not None else r[2] for r in pts], alpha=0.2)
    ax.set_xlabel("masking rate p")
    ax.set_ylabel("test video AUC (95% bootstrap band)")
    ax.set_title(title)
    ax.legend()
    _save_png(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["queue", "report", "list", "table"])
    ap.add_argument("grid", choices=GRIDS)
    ap.add_argument("--only", help="comma-separated points of the grid (names without the '<grid>-' prefix)")
    ap.add_argument("--rev", action="append", metavar="COMMIT",
                    help="report: read the experiments queued on this commit (repeat it; default: every commit, slow)")
    ap.add_argument("--alias", action="append", metavar="EXPERIMENT=POINT",
                    help="report: read a finished experiment of another name as a point of the grid (repeat it)")
    ap.add_argument("--out", type=Path, default=Path("reports"), help="report: the folder to write (default: reports)")
    ap.add_argument("--runs", action="append", type=Path, metavar="CSV",
                    help="report curve: also the runs of an earlier report's curve_runs.csv (experiments measured in "
                         "another clone); an experiment of the same backbone, size and seed wins (repeat it)")
    args = ap.parse_args(argv)
    if args.action == "list":
        for exp, sets in select(grid(args.grid), args.grid, args.only):
            print(exp, sets, "re-runs:", ", ".join(stages_rerun(sets)) or "none")
    elif args.action == "table":
        print(ablation_table() if args.grid == "ablation" else "\n".join(
            f"| {exp} | {', '.join(stages_rerun(sets))} |" for exp, sets in grid(args.grid)))
    elif args.action == "queue":
        queue(args.grid, only=args.only)
    else:
        aliases = parse_aliases(args.alias)
        report(args.grid, args.out, finished(args.grid, args.rev, aliases), aliases, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
