"""Video-level evaluation of the trained relation learner on the test split: the library behind ``evaluate``.

``evaluate.head`` chooses the detector: ``relation`` (default) is the relation stage's learner, trained on the
frozen cached vertices with cross-entropy only; ``joint`` is Algorithm 2's jointly trained model, the encoder
with the relation head trained together with it (Eq. 12) and stored in ``models/encoder.pt``, its threshold
the validation EER point of that model. Both read the same cached vertices, the encoder's own output in
evaluation mode (what the joint model computes end to end).

A video's score is the mean of its windows' fake probabilities, keyed by (dataset, method, video_id).
:func:`evaluate` reports AUC (with a stratified bootstrap interval), ACC at the threshold chosen on
VALIDATION (the EER point stored in the relation file; ``evaluate.threshold`` overrides it), EER and AP,
overall, per dataset (cross-dataset results when several datasets are configured) and per manipulation
method (each method against the real videos of its dataset).

Localisation (paper Sec. IV-F): Grad-CAM of the full model (encoder + relation learner) on the test FAKE
windows whose crops carry manipulation masks (the demo fakes), scored by the pointing game and the share of
heatmap energy inside the mask (:mod:`pipeline.scoring.explain`); reported under ``"localisation"``. It starts
from the backbone maps ``cache_features`` kept for these windows (``data/feature_maps.h5``), so only the STA
and the relation learner run here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from feature_cache import load_split
from feature_cache.maps import read_feature_maps
from pipeline.errors import InputRefused
from pipeline.model_io import load_encoder, load_joint_head, load_relation, read_model_file
from pipeline.params import EvaluateParams
from pipeline.runtime import resolve_device, seed_everything, sha256_file
from pipeline.scoring.explain import localisation_metrics
from pipeline.scoring.inference import predict_vertices
from pipeline.scoring.metrics import (binary_metrics, bootstrap_auc, breakdown, roc_points, threshold_at_eer,
                                      video_scores)

__all__ = ["Evaluation", "evaluate", "joint_threshold", "localisation", "check_targets", "family_ceiling", "TARGETS"]

# The bar a detector has to clear on the demo before its number means something (issue #13): test video
# AUC, the lower end of its bootstrap interval, and the AUC of its worst fake family.
TARGETS = {"test_auc": 0.90, "test_auc_ci_low": 0.80, "worst_family_auc": 0.80}


def check_targets(test: dict, per_method: dict) -> dict:
    """Each target of :data:`TARGETS` with the measured value and whether it is met (a missing value is
    not met); ``worst_family_auc`` names the family; ``ceiling`` (not a target) is how far that family alone
    caps the test AUC (:func:`family_ceiling`)."""
    fams = {k: v.get("auc") for k, v in per_method.items() if k.split("/")[-1] != "real"}
    known = {k: v for k, v in fams.items() if v is not None}
    worst = min(known, key=known.get) if known else None
    values = {"test_auc": test.get("auc"), "test_auc_ci_low": test.get("auc_ci_low"),
              "worst_family_auc": known.get(worst) if worst else None}
    out = {k: {"value": values[k], "target": t, "met": values[k] is not None and values[k] >= t}
           for k, t in TARGETS.items()}
    out["worst_family_auc"]["family"] = worst
    out["all_met"] = all(v["met"] for k, v in out.items() if k in TARGETS)
    out["ceiling"] = family_ceiling(per_method, worst)
    return out


def family_ceiling(per_method: dict, family: Optional[str]) -> Optional[dict]:
    r"""How far ``family``'s AUC alone caps the test AUC (None where it cannot be said).

    With one dataset, every family's AUC is taken against the same real videos (:func:`breakdown`), and the
    test AUC is their fake-count-weighted mean: with :math:`n_f` fake videos of family :math:`f`,
    :math:`N = \sum_f n_f` and :math:`R` the real ones,

    .. math:: \mathrm{AUC} = \frac{1}{N |R|} \sum_f \sum_{i \in f} \sum_{r \in R} [s_i > s_r]
              = \sum_f \frac{n_f}{N} \mathrm{AUC}_f

    (ties count one half on both sides). So even with every other family scored perfectly the test AUC is at
    most ``value`` :math:`= 1 - \frac{n_w}{N}(1 - \mathrm{AUC}_w)`, and the test AUC target needs the family at
    ``family_auc_needed`` :math:`= 1 - \frac{N}{n_w}(1 - t)` or above (``test_auc`` target :math:`t`). With
    several datasets the overall AUC also compares fakes of one with reals of another, and the identity fails.
    """
    if family is None or "/" not in family:
        return None
    fams = {k: v for k, v in per_method.items() if k.split("/")[-1] != "real"}
    if len({k.split("/", 1)[0] for k in fams}) != 1 or any(v.get("auc") is None or not v.get("n_pos")
                                                         for v in fams.values()):
        return None
    total = sum(v["n_pos"] for v in fams.values())
    share = fams[family]["n_pos"] / total
    return {"family": family, "value": 1.0 - share * (1.0 - fams[family]["auc"]),
            "family_auc_needed": max(0.0, 1.0 - (1.0 - TARGETS["test_auc"]) / share)}


@dataclass
class Evaluation:
    """``result``: the metrics dict (``test``, ``per_dataset``, ``per_method``, ``localisation``);
    ``videos``: one row per test video with ``score`` and ``pred``; ``roc``: DVC plot rows; ``curves``:
    name -> (labels, scores) for the ROC figure."""
    result: dict
    videos: pd.DataFrame
    roc: list
    curves: dict


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def localisation(relation, device, encoder_path: Path, crop_dir: Path, maps_path: Optional[Path] = None) -> dict:
    """Grad-CAM localisation metrics on the test fakes with masks (None metrics and a note when impossible);
    from ``cache_features``' backbone maps when ``maps_path`` exists (refused if another encoder wrote them),
    else from the clips."""
    if not Path(encoder_path).exists() or not (Path(crop_dir) / "index.csv").exists():
        return {"pointing_game": None, "energy_inside": None, "mask_area": None, "snippets": 0, "windows": 0,
                "note": f"needs {encoder_path} and {crop_dir}/index.csv"}
    encoder, _ = load_encoder(encoder_path, device)
    maps = None
    if maps_path is not None and Path(maps_path).exists():
        maps = read_feature_maps(maps_path, sha256_file(encoder_path))
    return localisation_metrics(encoder, relation, crop_dir, "test", device, maps=maps)


def joint_threshold(head, features: Path, encoder_sha256: str, device) -> float:
    """The validation EER threshold of the jointly trained model (its head on the encoder's validation
    vertices), chosen as the relation stage chooses its own."""
    x, _, keys = load_split(features, "val", encoder_sha256)
    if x is None:
        raise RuntimeError(f"{features}: no validation windows to choose the joint model's threshold on")
    vids = video_scores(predict_vertices(head, x, keys, device))
    return float(threshold_at_eer(vids["label"].to_numpy(), vids["score"].to_numpy()))


def evaluate(ev: EvaluateParams, features: Path, relation_path: Path, encoder_path: Path, crop_dir: Path, *,
             seed: int, device: str, feature_maps: Optional[Path] = None) -> Evaluation:
    """``ev.head``: ``relation`` scores the test vertices with the relation stage's learner
    (``relation_path``); ``joint`` with the relation head trained together with the encoder (Algorithm 2,
    stored in ``encoder_path``; ``relation_path`` is not read). Either way the vertices are the cached
    output of that encoder (``features``, refused if written by another one)."""
    seed_everything(seed)
    device = resolve_device(device)
    if ev.head == "joint":
        relation, _ = load_joint_head(encoder_path, device)
        expect = sha256_file(encoder_path)
    else:
        relation, meta = load_relation(relation_path, device)
        expect = None
        if Path(encoder_path).exists():
            read_model_file(encoder_path, "mrl-encoder/1")   # a broken encoder file is named as such (as mrl detect)
            expect = sha256_file(encoder_path)
        if expect and meta.get("encoder_sha256") and meta["encoder_sha256"] != expect:
            raise InputRefused(f"{relation_path}: trained on features of another encoder than {encoder_path} "
                               f"(SHA-256 differs)", fix="re-run cache_features and train_relation (dvc repro)")
    x, _, keys = load_split(features, "test", expect)
    if x is None:
        raise RuntimeError(f"{features}: no test windows to evaluate")
    if ev.threshold is not None:
        threshold = ev.threshold
    elif ev.head == "joint":
        threshold = joint_threshold(relation, features, expect, device)
    else:
        threshold = meta["threshold"]
    windows = predict_vertices(relation, x, keys, device)
    vids = video_scores(windows)
    y, s = vids["label"].to_numpy(), vids["score"].to_numpy()
    overall = _clean(binary_metrics(y, s, threshold))
    lo, hi = bootstrap_auc(y, s, ev.bootstrap, ev.ci, seed) if ev.bootstrap else (None, None)
    overall.update(auc_ci_low=lo, auc_ci_high=hi, ci=ev.ci, threshold=float(threshold),
                   windows=int(len(windows)))
    result = {"head": ev.head, "test": overall,
              "per_dataset": breakdown(vids, "dataset", threshold, ev.bootstrap, ev.ci, seed),
              "per_method": breakdown(vids, "method", threshold, ev.bootstrap, ev.ci, seed),
              "localisation": localisation(relation, device, encoder_path, crop_dir, feature_maps)}
    result["targets"] = check_targets(result["test"], result["per_method"])
    curves = {"test (all)": (y, s)}
    if vids["dataset"].nunique() > 1:
        for name, g in vids.groupby("dataset"):
            curves[f"test {name}"] = (g["label"].to_numpy(), g["score"].to_numpy())
    rows = []
    for name, (yy, ss) in curves.items():
        if len(set(yy.tolist())) == 2:
            rows += [{**r, "curve": name} for r in roc_points(yy, ss)]
    return Evaluation(result, vids.assign(pred=(vids["score"] >= threshold).astype(int)), rows, curves)
