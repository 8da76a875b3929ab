"""scripts/grids.py: the grids it queues and how it reads finished experiments back."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
grids = load_script("grids")


def test_mask_grids_cover_both_strategies_and_ten_rates():
    pts = grids.grid("mask")
    assert len(pts) == 20 and len({name for name, _ in pts}) == 20
    assert {(s["mask.strategy"], s["mask.rate"]) for _, s in pts} == {
        (st, r) for st in ("minimal", "random") for r in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}
    full = dict(grids.grid("mask-full"))
    assert full["mask-full-random-06"] == {"mask.strategy": "random", "mask.rate": 0.6,
                                           "train_encoder.mask.strategy": "random", "train_encoder.mask.rate": 0.6}


def test_only_finished_experiments_are_read_from_dvc_exp_show():
    """A trimmed copy of real `dvc exp show --json` output (experiments of any baseline commit count) (DVC 3.67) taken while a LOFO queue ran."""
    show = json.loads((ROOT / "tests" / "data" / "exp_show_lofo.json").read_text())
    states = {e["name"]: e["executor"]["state"] for e in show[1]["experiments"]}
    got = grids.finished_experiments(show)
    assert set(got) == {n for n, s in states.items() if s == "success"} and got
    for name, data in got.items():
        held = grids._params(data)["data"]["holdout_methods"]
        assert name == f"lofo-{held[0]}"
        per = grids._metric(data, "metrics/evaluate.json")["per_method"]
        assert grids._by_method(per, held[0])["n"] > 0          # keys are dataset/method


def _apply(sets: dict) -> dict:
    """params.yaml with the ``-S key=value`` overrides of a grid point (values parsed as YAML, as DVC does)."""
    import yaml

    from pipeline.params import flatten
    from workspace import merge_overrides

    over: dict = {}
    for key, value in sets.items():
        node = over
        *head, last = key.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(str(value))
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(flatten(over)) <= set(flatten(base)), f"{sets}: a key params.yaml does not have"
    return merge_overrides(base, over)


def test_every_ablation_is_a_valid_change_of_params_yaml():
    from pipeline.params import flatten, parse_params

    base = flatten(parse_params(_apply({})))
    pts = grids.grid("ablation")
    assert len({n for n, _ in pts}) == len(pts) == 15
    for name, sets in pts:
        p = flatten(parse_params(_apply(sets), name))          # validated as params.yaml would be
        changed = {k for k in base if base[k] != p[k]}
        assert changed == set(sets), (name, changed)            # each override really changes its key
    assert dict(pts)["ablation-image-based"] == {"encoder.backbone": "resnet18_2d"}


def test_stages_rerun_follows_dvc_yaml():
    dvc = ROOT / "dvc.yaml"
    assert grids.stages_rerun({"mask.rate": 0.6}, dvc) == ["train_relation", "evaluate"]
    assert grids.stages_rerun({"encoder.sta": False}, dvc) == ["train_encoder", "cache_features", "train_relation",
                                                                 "evaluate"]
    assert grids.stages_rerun({"data.holdout_methods": "[sbi]"}, dvc) == [
        "manifest", "crop", "train_encoder", "cache_features", "train_relation", "baseline", "peer", "evaluate"]
    assert grids.stages_rerun({"evaluate.ci": 0.9}, dvc) == ["baseline", "peer", "evaluate"]
    assert grids.stages_rerun({"evaluate.head": "joint"}, dvc) == ["evaluate"]    # the baseline has no head
    assert grids.stages_rerun({"evaluate.groups": "people.csv"}, dvc) == ["evaluate"]
    assert grids.stages_rerun({"peer.weights": "Meso4_F2F"}, dvc) == ["peer", "evaluate"]
    assert grids.stages_rerun({}, dvc) == []


def test_readme_states_the_stages_each_ablation_reruns():
    readme = (ROOT / "README.md").read_text()
    assert grids.ablation_table(ROOT / "dvc.yaml") in readme, "README's ablation table: run scripts/grids.py table ablation"


def test_report_csvs_feed_the_dvc_plots(tmp_path):
    """reports/<grid>_auc.csv has the columns dvc.yaml's top-level plots draw (one line per strategy)."""
    import csv

    import yaml

    rows = [("minimal", 0.0, 0.6, 0.4, 0.8, 12), ("random", 0.0, 0.55, 0.3, 0.7, 12), ("minimal", 0.5, 0.7, 0.5, 0.9, 12)]
    grids._write_csv(grids._wide(rows), tmp_path / "mask_auc.csv")
    got = list(csv.DictReader(open(tmp_path / "mask_auc.csv")))
    assert got == [{"rate": "0.0", "minimal": "0.6", "random": "0.55"}, {"rate": "0.5", "minimal": "0.7", "random": ""}]
    assert grids._wide(rows[2:]) == [{"rate": 0.5, "minimal": 0.7, "random": None}]   # a strategy not run: its column
    plots = {k: v for entry in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"] for k, v in entry.items()}
    mask = next(v for v in plots.values() if "reports/mask_auc.csv" in (v.get("y") or {}))
    assert mask["x"] == "rate" and mask["y"]["reports/mask_auc.csv"] == ["minimal", "random"]
    abl = next(v for v in plots.values() if "reports/ablation_auc.csv" in (v.get("x") or {}))
    assert abl["x"]["reports/ablation_auc.csv"] == "auc" and abl["y"]["reports/ablation_auc.csv"] == "ablation"


def test_ablation_report_lists_each_finished_ablation_in_grid_order_with_its_interval(tmp_path):
    def data(auc, val, mouth=None):
        test = {"auc": auc, "auc_ci_low": auc - 0.2, "auc_ci_high": auc + 0.1, "acc": 0.5, "eer": 0.4, "n": 12}
        ev = {"test": test, "vs_baseline": {"diff": auc - 0.7, "ci": [auc - 0.8, auc - 0.6]},
              "per_method": {"demo/sbi": {"auc": auc + 0.05}, **({"demo/mouth": {"auc": mouth}} if mouth else {})}}
        return {"metrics": {"metrics/evaluate.json": {"data": ev},
                            "metrics/train_encoder.json": {"data": {"val_auc": val}}}}

    md = grids.report("ablation", tmp_path, {"ablation-no-lod": data(0.61, 0.55),
                                             "ablation-full": data(0.78, 0.75, mouth=0.5)})
    lines = md.read_text().splitlines()
    assert "| encoder val AUC | test AUC | 95% CI | ACC | EER | videos | mouth | sbi | MRL - baseline [95% CI] |" in lines[2]
    rows = [ln for ln in lines if ln.startswith("| ablation-")]
    assert rows[0] == ("| ablation-full | the full model (default params) | 0.750 | 0.780 | [0.580, 0.880] | 0.500 | "
                       "0.400 | 12 | 0.500 | 0.830 | +0.080 [-0.020, +0.180] |")
    assert rows[1].startswith("| ablation-no-lod | without L_od (Table IV) | 0.550 | 0.610 | [0.410, 0.710] |")
    assert rows[1].endswith("| 12 | n/a | 0.660 | -0.090 [-0.190, +0.010] |")     # a family it has no score for
    assert len(lines[3].split("|")) == len(rows[0].split("|"))                        # the separator fits the rows
    assert (tmp_path / "ablation_auc.csv").read_text().splitlines()[1].startswith("full,0.78,")


def test_lofo_report_gives_the_unseen_familys_auc_with_its_interval_and_counts(tmp_path):
    def data(held, per_method):
        ev = {"test": {"auc": 0.6, "auc_ci_low": 0.45, "auc_ci_high": 0.75}, "per_method": per_method}
        return {"params": {"params.yaml": {"data": {"data": {"holdout_methods": [held]}}}},
                "metrics": {"metrics/evaluate.json": {"data": ev},
                            "metrics/baseline.json": {"data": {"test_per_method": {"demo/sbi": 0.7, "demo/faceswap": 0.4}}}}}

    new = {"demo/sbi": {"auc": 0.55, "auc_ci": [0.31, 0.79], "n": 35, "n_pos": 7, "n_neg": 28},
           "demo/faceswap": {"auc": 0.9, "auc_ci": [0.8, 1.0], "n": 35, "n_pos": 7, "n_neg": 28}}
    old = {"demo/faceswap": {"auc": 0.333, "n": 15}}  # an experiment from before per-family intervals
    md = grids.report("lofo", tmp_path, {"lofo-sbi": data("sbi", new), "lofo-faceswap": data("faceswap", old)})
    rows = {ln.split(" | ")[0][2:]: ln for ln in md.read_text().splitlines() if ln.startswith("| ") and "---" not in ln}
    assert rows["sbi"] == "| sbi | 0.550 [0.310, 0.790] | 7 + 28 | 0.600 [0.450, 0.750] | 0.700 |"
    assert rows["faceswap"] == "| faceswap | 0.333 [n/a, n/a] | 15 | 0.600 [0.450, 0.750] | 0.400 |"


def test_committed_metrics_keep_what_dvc_exp_show_drops(tmp_path, monkeypatch):
    """`dvc exp show --json` keeps only the numbers of a metrics file; the report reads the committed file."""
    import subprocess

    monkeypatch.chdir(tmp_path)
    full = {"per_method": {"demo/sbi": {"auc": 0.55, "auc_ci": [0.31, 0.79]}}}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps(full))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([*git, "add", "metrics"], check=True)
    subprocess.run([*git, "commit", "-qm", "exp"], check=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    shown = {"metrics": {"metrics/evaluate.json": {"data": {"per_method": {"demo/sbi": {"auc": 0.55}}}}}}
    assert grids._committed({**shown, "rev": rev}, "metrics/evaluate.json") == full
    assert grids._committed(shown, "metrics/evaluate.json") == {"per_method": {"demo/sbi": {"auc": 0.55}}}
    assert grids._committed({**shown, "rev": "0" * 40}, "metrics/evaluate.json")["per_method"]["demo/sbi"] == {"auc": 0.55}


def test_log_fit_recovers_a_known_curve_and_its_crossing():
    a, b = grids.log_fit([2, 4, 8, 16], [0.5 + 0.1 * __import__("math").log(k) for k in (2, 4, 8, 16)])
    assert abs(a - 0.5) < 1e-9 and abs(b - 0.1) < 1e-9
    # 0.5 + 0.1 ln k = 0.9  <=>  k = e^4
    assert abs(grids.identities_needed(a, b, 0.90) - 54.598) < 1e-2
    assert grids.identities_needed(0.7, -0.01, 0.90) is None          # a falling curve predicts nothing
    assert grids.identities_needed(0.51, 0.001, 0.90) is None         # flat at chance: e^390 is no size
    assert abs(grids.identities_needed(0.0, 0.06, 0.90) - 3.269e6) / 3.269e6 < 1e-3  # e^15, under the cap


def test_curve_grid_is_points_x_seeds_x_backbones():
    pts = dict(grids.grid("curve"))
    assert len(pts) == len(grids.CURVE) * len(grids.CURVE_SEEDS) * len(grids.CURVE_BACKBONES) == 30
    assert pts["curve-mobilenetv2-5-s0"] == {"encoder.backbone": "mobilenet_v2", "data.train_identities": 5, "seed": 0}
    assert pts["curve-small3d-all-s2"] == {"encoder.backbone": "small3d", "data.train_identities": "null", "seed": 2}
    rerun = grids.stages_rerun(pts["curve-small3d-all-s2"])
    assert "demo" not in rerun and rerun[:2] == ["manifest", "crop"]   # the seed keeps the demo (demo.seed)


def _curve_exp(k, n_ident, auc, base, backbone="mobilenet_v2", seed=0):
    return {"params": {"params.yaml": {"data": {"seed": seed, "encoder": {"backbone": backbone},
                                                 "data": {"train_identities": k}}}},
            "metrics": {"metrics/evaluate.json": {"data": {"test": {
                "auc": auc, "auc_ci_low": auc - 0.1, "auc_ci_high": auc + 0.1, "n": 56}}},
                "metrics/train_encoder.json": {"data": {"run": {"train_identities": n_ident,
                                                                "train_windows": 10 * n_ident}}},
                "metrics/baseline.json": {"data": {"test": {"auc": base}}}}}


def test_curve_report_groups_seeds_per_backbone_and_fits(tmp_path):
    data = _curve_exp
    exps = {"curve-mobilenetv2-all-s0": data(None, 12, 0.70, 0.66), "curve-mobilenetv2-all-s1": data(None, 12, 0.74, 0.64, seed=1),
            "curve-mobilenetv2-3-s0": data(3, 3, 0.55, 0.60), "curve-mobilenetv2-6-s0": data(6, 6, 0.62, 0.64),
            "curve-small3d-3-s0": data(3, 3, 0.50, 0.60, "small3d")}
    md = grids.report("curve", tmp_path, exps).read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and ln[2].isalpha() and "backbone" not in ln]
    assert [r.split(" | ")[:2] for r in rows] == [["| mobilenet_v2", "3"], ["| mobilenet_v2", "6"],
                                                  ["| mobilenet_v2", "12 (all)"], ["| small3d", "3"]]
    # two seeds at 12 identities: mean 0.72 of 0.70 and 0.74; the baseline's mean 0.65 of 0.66 and 0.64
    assert "| 120 | 2 | 0.720 [0.700, 0.740] | 0.650 [0.640, 0.660] | 56 |" in rows[2]
    assert "- MRL, mobilenet_v2: test AUC = " in md and "over 4 runs" in md
    assert "MRL, small3d" not in md                       # one point: no fit
    assert (tmp_path / "curve.png").stat().st_size > 1000
    wide = (tmp_path / "curve_auc.csv").read_text().splitlines()
    assert wide[0] == "identities,mrl_mobilenet_v2,mrl_small3d,baseline"
    assert wide[1] == "3,0.55,0.5,0.6" and wide[2] == "6,0.62,,0.64"   # small3d not run at 6: an empty cell
    assert (tmp_path / "curve_runs.csv").read_text().count("\n") == 6   # header + one line per run


def test_curve_report_joins_the_runs_of_an_earlier_report(tmp_path):
    """Runs measured in another clone (their experiments gone, their curve_runs.csv kept) join a new report's:
    the same table, fits and CSVs as if every run were an experiment here; an experiment wins over a record."""
    first = {"curve-mobilenetv2-3-s0": _curve_exp(3, 3, 0.55, 0.60), "curve-mobilenetv2-6-s0": _curve_exp(6, 6, 0.62, 0.64),
             "curve-mobilenetv2-all-s0": _curve_exp(None, 12, 0.70, 0.66), "curve-small3d-3-s0": _curve_exp(3, 3, 0.40, 0.60, "small3d")}
    second = {"curve-small3d-3-s0": _curve_exp(3, 3, 0.50, 0.60, "small3d"),          # re-run: replaces the record
              "curve-small3d-6-s0": _curve_exp(6, 6, 0.52, 0.64, "small3d"),
              "curve-small3d-all-s0": _curve_exp(None, 12, 0.51, 0.66, "small3d")}
    grids.report("curve", tmp_path / "a", first)
    grids.report("curve", tmp_path / "all", {**first, **second})          # the reference: every run an experiment
    md = grids.report("curve", tmp_path / "b", second, runs=[tmp_path / "a" / "curve_runs.csv"]).read_text()
    for f in ("curve_runs.csv", "curve_points.csv", "curve_auc.csv"):
        assert (tmp_path / "b" / f).read_text() == (tmp_path / "all" / f).read_text(), f
    ref = (tmp_path / "all" / "curve.md").read_text()
    assert md.split("\n", 4)[4] == ref.split("\n", 2)[2]                 # the same table and fits
    assert "With 3 runs of earlier reports" in md and "6 runs in all" in md
    assert "| small3d | 3 | 30 | 1 | 0.500 [0.500, 0.500]" in md           # the experiment's 0.50, not the record's 0.40
    with pytest.raises(SystemExit, match="no such file"):
        grids.report("curve", tmp_path / "c", second, runs=[tmp_path / "nope.csv"])
    (tmp_path / "x.csv").write_text("rate,minimal\n0.5,0.7\n")
    with pytest.raises(SystemExit, match="not a curve_runs.csv"):
        grids.report("curve", tmp_path / "c", second, runs=[tmp_path / "x.csv"])
    with pytest.raises(SystemExit, match="learning curve"):
        grids.report("mask", tmp_path / "c", {}, runs=[tmp_path / "a" / "curve_runs.csv"])


def test_only_selects_points_by_name():
    pts = grids.select(grids.grid("mask-full"), "mask-full", "minimal-00,random-05")
    assert [e for e, _ in pts] == ["mask-full-minimal-00", "mask-full-random-05"]
    assert pts[1][1]["train_encoder.mask.rate"] == 0.5
    with pytest.raises(SystemExit, match="no point"):
        grids.select(grids.grid("mask"), "mask", "minimal-5")


def test_alias_reads_a_differently_named_run_as_a_grid_point():
    assert grids.parse_aliases(["crop96=mobilenetv2-all-s0", " b = small3d-5-s1 "]) == {
        "crop96": "mobilenetv2-all-s0", "b": "small3d-5-s1"}
    with pytest.raises(SystemExit, match="write EXPERIMENT=POINT"):
        grids.parse_aliases(["crop96"])
    run, other = {"metrics": {"m": 1}}, {"metrics": {"m": 2}}
    exps = {"crop96": run, "curve-small3d-5-s0": other, "mask-minimal-05": other}
    got = grids.grid_experiments("curve", exps, {"crop96": "mobilenetv2-all-s0"})
    assert got == {"curve-mobilenetv2-all-s0": run, "curve-small3d-5-s0": other}   # not the mask run
    with pytest.raises(SystemExit, match="no point 'mobilenetv2-all'"):
        grids.grid_experiments("curve", exps, {"crop96": "mobilenetv2-all"})
    with pytest.raises(SystemExit, match="no finished experiment named 'crop64'.*--rev"):
        grids.grid_experiments("curve", exps, {"crop64": "mobilenetv2-all-s0"})
    with pytest.raises(SystemExit, match="curve-small3d-5-s0 itself has finished"):
        grids.grid_experiments("curve", exps, {"crop96": "small3d-5-s0"})


def test_report_names_the_runs_read_under_another_name(tmp_path):
    exps = {"lofo-sbi": {"params": {"params.yaml": {"data": {"data": {"holdout_methods": ["sbi"]}}}},
                         "metrics": {"metrics/evaluate.json": {"data": {"per_method": {"demo/sbi": {"auc": 0.8}}}}}}}
    md = grids.report("lofo", tmp_path, exps, aliases={"old-sbi": "sbi"}).read_text()
    assert "Read under another name: old-sbi as lofo-sbi" in md and "| sbi | 0.800 [n/a, n/a] |" in md
