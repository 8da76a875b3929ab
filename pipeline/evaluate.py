"""DVC stage ``evaluate``: video-level metrics of the trained relation learner on the test split.

A video's score is the mean of its windows' fake probabilities, keyed by (dataset, method, video_id).
Reports AUC (with a stratified bootstrap interval), ACC at the threshold chosen on VALIDATION (the EER
point; ``evaluate.threshold`` overrides it), EER and AP, overall, per dataset (cross-dataset results
when several datasets are configured) and per manipulation method (each method against the real
videos of its dataset). Writes ``metrics/evaluate.json`` (DVC metrics), ``plots/roc.json`` (DVC plots),
``plots/roc.png`` and ``reports/video_scores.csv``, and logs all of it to MLflow.

Localisation (paper Sec. IV-F): Grad-CAM of the full model (``models/encoder.pt`` + the relation learner) on
the test FAKE windows whose crops carry manipulation masks (the demo fakes), scored by the pointing game and
the share of heatmap energy inside the mask (:mod:`pipeline.explain`); reported under ``"localisation"``.

    python -m pipeline.evaluate [--params params.yaml]
"""
from __future__ import annotations

import argparse
from pathlib import Path


from pipeline.params import Params, load_params
from pipeline.runtime import resolve_device, seed_everything, write_csv, write_json
from pipeline.train_relation import ENCODER, FEATURES, OUT_MODEL as RELATION, load_split

CROPS = Path("data/crops")

METRICS = Path("metrics/evaluate.json")
ROC_JSON = Path("plots/roc.json")
ROC_PNG = Path("plots/roc.png")
SCORES = Path("reports/video_scores.csv")
RUN_DIR = Path("runs/evaluate")


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def localisation(p: Params, relation, device, encoder_path: Path = ENCODER, crop_dir: Path = CROPS) -> dict:
    """Grad-CAM localisation metrics on the test fakes with masks (None metrics and a note when impossible)."""
    from pipeline.explain import localisation_metrics
    from pipeline.model_io import load_encoder

    if not Path(encoder_path).exists() or not (Path(crop_dir) / "index.csv").exists():
        return {"pointing_game": None, "energy_inside": None, "mask_area": None, "snippets": 0, "windows": 0,
                "note": f"needs {encoder_path} and {crop_dir}/index.csv"}
    encoder, _ = load_encoder(encoder_path, device)
    return localisation_metrics(encoder, relation, crop_dir, "test", device)


def evaluate(p: Params, features: Path = FEATURES, relation_path: Path = RELATION, crop_dir: Path = CROPS) -> dict:
    from feature_cache import sha256_file
    from pipeline.metrics import binary_metrics, bootstrap_auc, breakdown, roc_points, save_roc_png, video_scores
    from pipeline.inference import predict_vertices
    from pipeline.model_io import load_relation

    seed_everything(p.seed)
    device = resolve_device(p.device)
    relation, meta = load_relation(relation_path, device)
    expect = sha256_file(ENCODER) if ENCODER.exists() else None
    if expect and meta.get("encoder_sha256") and meta["encoder_sha256"] != expect:
        raise RuntimeError(f"{relation_path}: trained on features of another encoder; re-run train_relation")
    x, _, keys = load_split(features, "test", expect)
    if x is None:
        raise RuntimeError(f"{features}: no test windows to evaluate")
    threshold = p.evaluate.threshold if p.evaluate.threshold is not None else meta["threshold"]
    windows = predict_vertices(relation, x, keys, device)
    vids = video_scores(windows)
    y, s = vids["label"].to_numpy(), vids["score"].to_numpy()
    overall = _clean(binary_metrics(y, s, threshold))
    lo, hi = bootstrap_auc(y, s, p.evaluate.bootstrap, p.evaluate.ci, p.seed) if p.evaluate.bootstrap else (None, None)
    overall.update(auc_ci_low=lo, auc_ci_high=hi, ci=p.evaluate.ci, threshold=float(threshold),
                   windows=int(len(windows)))
    result = {"test": overall,
              "per_dataset": breakdown(vids, "dataset", threshold),
              "per_method": breakdown(vids, "method", threshold),
              "localisation": localisation(p, relation, device, crop_dir=crop_dir)}
    curves = {"test (all)": (y, s)}
    if vids["dataset"].nunique() > 1:
        for name, g in vids.groupby("dataset"):
            curves[f"test {name}"] = (g["label"].to_numpy(), g["score"].to_numpy())
    rows = []
    for name, (yy, ss) in curves.items():
        if len(set(yy.tolist())) == 2:
            rows += [{**r, "curve": name} for r in roc_points(yy, ss)]
    write_json({"roc": rows}, ROC_JSON)
    save_roc_png(curves, ROC_PNG)
    write_csv(vids.assign(pred=(vids["score"] >= threshold).astype(int)), SCORES)
    write_json(result, METRICS)

    import mlflow
    from pipeline.tracking import start_run

    with start_run("evaluate", p, p.mlflow, {"relation_model": str(relation_path)}) as run:
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in overall.items()
                            if isinstance(v, (int, float)) and v is not None})
        for group in ("per_dataset", "per_method"):
            for name, m in result[group].items():
                for k, v in m.items():
                    if isinstance(v, (int, float)) and v is not None and k in ("auc", "acc", "eer", "ap"):
                        mlflow.log_metric(f"{group}.{name}.{k}".replace(" ", "_"), float(v))
        loc = result["localisation"]
        mlflow.log_metrics({f"localisation_{k}": float(v) for k, v in loc.items()
                            if k in ("pointing_game", "energy_inside", "mask_area", "snippets") and v is not None})
        for name, m in (loc.get("per_method") or {}).items():
            for k in ("pointing_game", "energy_inside"):
                if m.get(k) is not None:
                    mlflow.log_metric(f"localisation.{name}.{k}".replace(" ", "_"), float(m[k]))
        for f in (METRICS, ROC_JSON, ROC_PNG, SCORES):
            mlflow.log_artifact(str(f))
        write_json({"run_id": run.info.run_id}, RUN_DIR / "mlflow_run.json")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    res = evaluate(p, crop_dir=Path(p.crop.out_dir))
    r, loc = res["test"], res["localisation"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"evaluate: {r['n']} test videos: AUC {fmt(r['auc'])} [{fmt(r['auc_ci_low'])}, {fmt(r['auc_ci_high'])}], "
          f"ACC {fmt(r['acc'])}, EER {fmt(r['eer'])}, AP {fmt(r['ap'])}; localisation on {loc.get('windows', 0)} "
          f"fake windows: pointing game {fmt(loc.get('pointing_game'))}, energy inside mask "
          f"{fmt(loc.get('energy_inside'))} (mask area {fmt(loc.get('mask_area'))}) -> {METRICS}")


if __name__ == "__main__":
    main()
