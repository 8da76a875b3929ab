"""Training candidates side by side on the same crops: which loss balance and edge handling learn.

    python scripts/compare_candidates.py [--params params.yaml] [--part encoder|relation|both]
                                         [--only NAME ...] [--seeds 0 1] [--out reports/candidates]

Needs the crops of the configured data (``dvc repro crop``). For every ENCODER candidate (overrides of
``train_encoder``) it trains the encoder with the stage's own code, caches the features and trains the
relation stage with the params file's ``mask``/``relation``; for every RELATION candidate it trains only
the relation stage on the features of the params file's encoder. Reported per candidate and seed: the
last-epoch training cross-entropy, the validation video AUC of the selected epoch, the test video AUC with
its bootstrap interval, and (encoder candidates) the mean cosine between the vertex tensors of different
validation videos (near 1 = the encoder maps every video to the same vertices: collapse).
Writes ``<out>.md`` (a table) and ``<out>.json``; nothing is logged to MLflow.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feature_cache import load_split, sha256_file  # noqa: E402
from pipeline.learning.encoder import encoder_payload, train_encoder  # noqa: E402
from pipeline.learning.relation import train_relation  # noqa: E402
from pipeline.params import load_params, merge_overrides, parse_params  # noqa: E402
from pipeline.runtime import atomic_torch_save  # noqa: E402
from pipeline.scoring.features import cache_features  # noqa: E402
from pipeline.scoring.inference import predict_vertices  # noqa: E402
from pipeline.scoring.metrics import binary_metrics, bootstrap_auc, video_scores  # noqa: E402

_BN = {"train_encoder": {"relation": {"input_norm": "batch"}}, "relation": {"input_norm": "batch"}}
ENCODER = {
    "paper-literal: L_od summed (Eq. 4), lambda 0.75/0.75": {"train_encoder": {"od_reduction": "sum"}},
    "L_od per pair, lambda 0.75/0.75": {"train_encoder": {"od_reduction": "pairs"}},
    "no regularisers (lambda 0/0)": {"train_encoder": {"lambda_od": 0.0, "lambda_tc": 0.0}},
    "authors' code losses (cosine/l1), lambda 0.75/0.75": {"train_encoder": {"od_variant": "cosine",
                                                                             "tc_variant": "l1"}},
    "L_od per pair + augmentation": {"train_encoder": {"od_reduction": "pairs", "augment": True}},
    "L_od per pair + augmentation + SBI pseudo-fakes 0.5": {
        "train_encoder": {"od_reduction": "pairs", "augment": True, "pseudo_fake_prob": 0.5}},
    "BN vertices, L_od per pair": _BN,
    "BN vertices, lambda 0/0": {"train_encoder": {"relation": {"input_norm": "batch"}, "lambda_od": 0.0,
                                                  "lambda_tc": 0.0}, "relation": {"input_norm": "batch"}},
    "BN vertices, L_od summed (paper)": {"train_encoder": {"relation": {"input_norm": "batch"}, "od_reduction": "sum"},
                                         "relation": {"input_norm": "batch"}},
    "BN vertices, head dropout 0.2": {"train_encoder": {"relation": {"input_norm": "batch", "dropout": 0.2}},
                                      "relation": {"input_norm": "batch", "dropout": 0.2}},
    "BN vertices + augmentation": {"train_encoder": {"relation": {"input_norm": "batch"}, "augment": True},
                                   "relation": {"input_norm": "batch"}},
    "BN vertices + augmentation + SBI pseudo-fakes 0.5": {
        "train_encoder": {"relation": {"input_norm": "batch"}, "augment": True, "pseudo_fake_prob": 0.5},
        "relation": {"input_norm": "batch"}},
}
RELATION = {
    "paper: gaussian E, minimal 0.5 every step, unmasked eval": {"relation": {"edge_init": "gaussian"},
                                                                 "mask": {"in_inference": False}},
    "E init ones": {"relation": {"edge_init": "ones"}, "mask": {"in_inference": False}},
    "mask once per epoch (Alg. 2)": {"mask": {"schedule": "epoch", "in_inference": False}},
    "expected mask at eval": {"mask": {"in_inference": "expected"}},
    "E init ones + expected mask at eval": {"relation": {"edge_init": "ones"}, "mask": {"in_inference": "expected"}},
    "authors' adjacency: normalised, binary E": {"relation": {"adjacency": "normalized", "edge_init": "binary"},
                                                 "mask": {"in_inference": False}},
    "no masking": {"mask": {"strategy": "none", "in_inference": False}},
}


def test_auc(rel, feats: Path, sha: str, bootstrap: int, seed: int) -> dict:
    x, _, keys = load_split(feats, "test", sha)
    vids = video_scores(predict_vertices(rel, x, keys, torch.device("cpu")))
    y, s = vids["label"].to_numpy(), vids["score"].to_numpy()
    lo, hi = bootstrap_auc(y, s, bootstrap, 0.95, seed)
    return {"test_auc": binary_metrics(y, s)["auc"], "test_lo": lo, "test_hi": hi, "test_videos": len(vids)}


def vertex_cosine(feats: Path, sha: str) -> float:
    """Mean cosine between the (flattened) vertex tensors of different validation windows."""
    x, _, _ = load_split(feats, "val", sha)
    f = torch.nn.functional.normalize(x.flatten(1), dim=1)
    c = f @ f.T
    n = len(c)
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def relation_run(p, feats: Path, sha: str, work: Path) -> dict:
    r = train_relation(p.relation, p.mask, p.train_relation, feats, work / "rel_run", seed=p.seed, device=p.device,
                       encoder_sha256=sha)
    hist = r.fit.history
    return {"rel_train_ce": hist[-1]["train_ce"], "rel_val_auc": r.fit.best_metrics.get("val_auc"),
            **test_auc(r.model, feats, sha, p.evaluate.bootstrap, p.seed)}


def encoder_run(p, crops: str, work: Path) -> tuple[dict, Path, str]:
    t0 = time.time()
    res = train_encoder(p.encoder, p.clip, p.train_encoder, crops, work / "enc_run", seed=p.seed, device=p.device,
                        image_size=p.crop.image_size)
    enc = work / "encoder.pt"
    atomic_torch_save(encoder_payload(res, p.crop), enc)
    feats = work / "features.h5"
    cache_features(crops, enc, feats, seed=p.seed, device=p.device, batch_size=p.train_encoder.batch_size,
                   num_workers=p.train_encoder.num_workers)
    sha = sha256_file(enc)
    hist = res.fit.history
    row = {"enc_train_ce_first": hist[0]["train_ce"], "enc_train_ce": hist[-1]["train_ce"],
           "enc_train_od": hist[-1].get("train_od"), "enc_val_auc": res.fit.best_metrics.get("val_auc"),
           "best_epoch": res.fit.best_epoch, "vertex_cosine": vertex_cosine(feats, sha),
           "enc_seconds": round(time.time() - t0, 1)}
    return row, feats, sha


def fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--part", choices=["encoder", "relation", "both"], default="both")
    ap.add_argument("--only", nargs="*", default=None, help="substrings of candidate names to run")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--out", default="reports/candidates")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="params for every run, e.g. train_encoder.epochs=30 (YAML values)")
    args = ap.parse_args(argv)
    base = yaml.safe_load(Path(args.params).read_text())
    for kv in args.set:
        key, value = kv.split("=", 1)
        node = {}
        cur = node
        *path, last = key.split(".")
        for k in path:
            cur = cur.setdefault(k, {})
        cur[last] = yaml.safe_load(value)
        base = merge_overrides(base, node)
    crops = load_params(args.params).crop.out_dir
    torch.set_num_threads(2)
    rows = []

    def wanted(name):
        return args.only is None or any(o.lower() in name.lower() for o in args.only)

    for seed in args.seeds:
        if args.part in ("relation", "both"):
            with tempfile.TemporaryDirectory() as tmp:
                p = parse_params(merge_overrides(base, {"seed": seed}))
                enc_row, feats, sha = encoder_run(p, crops, Path(tmp))
                for name, over in RELATION.items():
                    if wanted(name):
                        q = parse_params(merge_overrides(base, merge_overrides(over, {"seed": seed})))
                        rows.append({"part": "relation", "candidate": name, "seed": seed,
                                     **relation_run(q, feats, sha, Path(tmp) / name[:8])})
                        print(json.dumps(rows[-1]), flush=True)
        if args.part in ("encoder", "both"):
            for name, over in ENCODER.items():
                if not wanted(name):
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    p = parse_params(merge_overrides(base, merge_overrides(over, {"seed": seed})))
                    enc_row, feats, sha = encoder_run(p, crops, Path(tmp))
                    rows.append({"part": "encoder", "candidate": name, "seed": seed, **enc_row,
                                 **relation_run(p, feats, sha, Path(tmp))})
                    print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    cols = ["part", "candidate", "seed", "enc_train_ce_first", "enc_train_ce", "enc_val_auc", "vertex_cosine",
            "rel_train_ce", "rel_val_auc", "test_auc", "test_lo", "test_hi", "test_videos"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"compare_candidates: {len(rows)} runs -> {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
