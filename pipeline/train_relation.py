"""DVC stage ``train_relation``: train the relation learner on the cached vertices.

Masking (``mask.strategy``, ``mask.rate``) -> relation cell over the T snippets (``relation.cell``:
the dense GConv-GRU of Eq. 8-10 by default, or a torch-geometric-temporal cell) -> MLP -> logit.
Only this stage and ``evaluate`` depend on ``mask.*`` and ``relation.*``, so a masking sweep
(``dvc exp run -S mask.rate=0.6``) re-runs seconds of work, never the crops or the encoder.
The epoch is selected on the validation split; the decision threshold is set at the validation EER.

    python -m pipeline.train_relation [--params params.yaml]
    torchrun --nproc_per_node 2 -m pipeline.train_relation     # data parallel (README, "Scaling out")

Under torchrun every rank holds the (small) cached vertices, takes its slice of each global batch
(``train_relation.batch_size`` stays the global batch), and rank 0 validates, logs and writes.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import pandas as pd
import torch

from pipeline import distributed as dist
from pipeline.params import Params, load_params
from pipeline.runtime import atomic_torch_save, params_digest, resolve_device, seed_everything, write_csv, write_json
from pipeline.inference import predict_vertices
from pipeline.training import fit, video_metrics

RELATION_FORMAT = "mrl-relation/1"
FEATURES = Path("data/features.h5")
ENCODER = Path("models/encoder.pt")
OUT_MODEL = Path("models/relation.pt")
RUN_DIR = Path("runs/train_relation")
METRICS = Path("metrics/train_relation.json")
PLOTS = Path("plots/train_relation.csv")


def stage_params(p: Params) -> dict:
    return {"seed": p.seed, "mask": p.mask.model_dump(), "relation": p.relation.model_dump(),
            "train_relation": p.train_relation.model_dump()}


def load_split(path: Path, split: str, expect_sha: str | None = None):
    """All windows of one split as tensors: (vertices [W,T,N,C], labels [W], keys DataFrame)."""
    from feature_cache import FeatureDataset

    ds = FeatureDataset(path, split=split, expect_encoder_sha256=expect_sha)
    if len(ds) == 0:
        return None, None, ds.keys
    xs, ys = zip(*[(ds[i][0], ds[i][1]) for i in range(len(ds))])
    return torch.stack(xs), torch.stack([torch.as_tensor(y, dtype=torch.float32) for y in ys]), ds.keys.reset_index(drop=True)


def train_relation(p: Params, features: Path = FEATURES, out_model: Path = OUT_MODEL, run_dir: Path = RUN_DIR) -> dict:
    from feature_cache import open_cache, sha256_file
    from graph_models import build_relation
    from pipeline.metrics import threshold_at_eer, video_scores

    seed_everything(p.seed)
    device = dist.device_for(resolve_device(p.device))
    main = dist.is_main()
    expect = sha256_file(ENCODER) if ENCODER.exists() else None
    xtr, ytr, _ = load_split(features, "train", expect)
    xva, yva, kva = load_split(features, "val", expect)
    if xtr is None or xva is None:
        raise RuntimeError(f"{features}: needs windows in both train and val splits")
    _, T, N, C = xtr.shape
    rel = build_relation(C, N, p.relation, p.mask)
    tr = p.train_relation
    lossf = torch.nn.BCEWithLogitsLoss()

    def train_batches(gen):
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(order), tr.batch_size):
            idx = order[i:i + tr.batch_size]
            if dist.is_distributed():  # this rank's slice of the global batch
                local, meta = dist.shard_batch(idx.tolist())
                idx = torch.as_tensor(local, dtype=torch.long)
                yield {"x": xtr[idx], "label": ytr[idx], **meta}
            else:
                yield {"x": xtr[idx], "label": ytr[idx]}

    def step(model, batch, gen):
        logits = model(batch["x"].to(device))
        ce = lossf(logits.float(), batch["label"].to(device))
        return {"total": ce, "ce": ce}

    def validate(model):
        w = predict_vertices(model, xva, kva, device)
        loss = float(lossf(torch.logit(torch.tensor(w["prob"].to_numpy()).clamp(1e-7, 1 - 1e-7)).float(), yva))
        return {"val_loss": loss, **video_metrics(w)}

    import mlflow
    from pipeline.tracking import start_run

    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tracking = start_run("train_relation", p, p.mlflow, {"features": str(features)}) if main else contextlib.nullcontext()
    with tracking as run:
        res = fit(rel, train_batches=train_batches, step=step, validate=validate, optim=tr, seed=p.seed,
                  device=device, checkpoint=run_dir / "checkpoint.pt",
                  digest=params_digest({**stage_params(p), "features": open_cache(features, verify=False).content_sha256}),
                  log_epoch=lambda m, e: mlflow.log_metrics({k: v for k, v in m.items() if v == v}, step=e),
                  desc="train_relation")
        rel.load_state_dict(res.best_state)
        if not main:  # rank 0 writes the outputs and logs
            return {"best_epoch": res.best_epoch, "rank": dist.rank(), "train_windows": len(xtr),
                    "val_windows": len(xva), **{k: v for k, v in res.best_metrics.items() if k.startswith("val_")}}
        vids = video_scores(predict_vertices(rel, xva, kva, device))
        thr = threshold_at_eer(vids["label"].to_numpy(), vids["score"].to_numpy())
        payload = {"format": RELATION_FORMAT, "state_dict": res.best_state, "in_dim": int(C), "heads": int(N),
                   "snippets": int(T), "relation": p.relation.model_dump(), "mask": p.mask.model_dump(),
                   "threshold": float(thr), "encoder_sha256": expect or "", "best_epoch": res.best_epoch}
        atomic_torch_save(payload, out_model)
        summary = {"best_epoch": res.best_epoch, "threshold": float(thr), "seconds": round(time.time() - t0, 2),
                   "train_windows": len(xtr), "val_windows": len(xva), "mlflow_run_id": run.info.run_id,
                   **{k: v for k, v in res.best_metrics.items() if k.startswith("val_")}}
        write_csv(pd.DataFrame(res.history), PLOTS)
        write_json(summary, METRICS)
        mlflow.log_metrics({f"best_{k}": v for k, v in summary.items()
                            if isinstance(v, float) and k.startswith("val_") and v == v})
        mlflow.log_metric("threshold", float(thr))
        mlflow.log_artifact(str(PLOTS))
        import mlflow.pytorch
        mlflow.pytorch.log_model(rel.cpu(), name="model", serialization_format="pickle")
        write_json({"run_id": run.info.run_id}, run_dir / "mlflow_run.json")
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    with dist.session(p.device):
        s = train_relation(p)
        main = dist.is_main()
        dist.barrier()
    if main:
        print(f"train_relation: {p.relation.cell}, mask {p.mask.strategy}@{p.mask.rate}: best epoch {s['best_epoch']}, "
          f"val AUC {s.get('val_auc', float('nan')):.4f}, {s['seconds']} s -> {OUT_MODEL}")


if __name__ == "__main__":
    main()
