"""DVC stage ``train_encoder``: train backbone + STA jointly with a relation head (Eq. 12).

Reads the face-crop windows, trains the full MRL model (encoder + its own relation head, with the
masking settings of ``train_encoder.mask``, separate from the ``mask.*`` swept later), selects the
epoch on the validation split (video-level AUC) and writes the encoder as ``models/encoder.pt``:
a plain dict of tensors and JSON-able metadata, loadable with ``torch.load(weights_only=True)``.

    python -m pipeline.train_encoder [--params params.yaml]
    torchrun --nproc_per_node 4 -m pipeline.train_encoder      # data parallel (README, "Scaling out")

Under torchrun ``train_encoder.batch_size`` stays the global batch (each rank takes its slice of every
global batch of the single-process epoch), BatchNorm becomes SyncBatchNorm on CUDA, and rank 0
validates, logs to MLflow and writes the checkpoint and the model; see :mod:`pipeline.distributed`.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from pipeline import distributed as dist
from pipeline.model_card import crop_config_from_params
from pipeline.params import Params, load_params
from pipeline.runtime import (atomic_torch_save, autocast, params_digest, resolve_device,
                              seed_everything, write_csv, write_json)
from pipeline.training import fit, video_metrics, window_predictions

ENCODER_FORMAT = "mrl-encoder/1"
OUT_MODEL = Path("models/encoder.pt")
RUN_DIR = Path("runs/train_encoder")
METRICS = Path("metrics/train_encoder.json")
PLOTS = Path("plots/train_encoder.csv")


def stage_params(p: Params) -> dict:
    """The params this stage depends on (as declared in dvc.yaml)."""
    return {"seed": p.seed, "clip": p.clip.model_dump(), "encoder": p.encoder.model_dump(),
            "train_encoder": p.train_encoder.model_dump(), "crop": {"image_size": p.crop.image_size}}


def clip_batch_to_input(clips: torch.Tensor, device: torch.device, flip: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [B, F, S, S, 3] -> float [B, 3, F, S, S] in [0, 1]; ``flip`` [B] bool mirrors horizontally.

    Normalisation (mean/std) happens inside the encoder, identically for training and test."""
    x = clips.to(device, non_blocking=True).permute(0, 4, 1, 2, 3).float().div_(255.0)
    if flip is not None and bool(flip.any()):
        x[flip.to(device)] = x[flip.to(device)].flip(-1)
    return x


def window_loader(crop_dir: str, split: str, batch_size: int, num_workers: int,
                  shuffle_gen: torch.Generator | None = None, *, shard: bool = False,
                  persistent: bool = False, dataset=None) -> DataLoader:
    """A DataLoader over the crop windows of ``split``.

    ``shuffle_gen``: shuffle with this generator (the epoch generator). ``shard`` (under torchrun):
    ``batch_size`` is the global batch and this rank gets its slice of each one
    (:class:`pipeline.distributed.ShardedBatchSampler`; the permutation is drawn from ``shuffle_gen``
    exactly as the single-process loader draws it). ``persistent``: keep the worker processes (and
    their open HDF5 handles) between passes, for a loader iterated every epoch. ``dataset``: an
    already-built dataset (a ``Subset`` of windows, say) instead of the ``split`` of ``crop_dir``."""
    from pipeline.clips import ClipDataset

    ds = ClipDataset(crop_dir, split=split) if dataset is None else dataset
    workers = {"num_workers": num_workers, "worker_init_fn": dist.seed_worker if num_workers else None,
               "persistent_workers": bool(persistent and num_workers)}
    if shard and dist.is_distributed():
        from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

        base = RandomSampler(ds, generator=shuffle_gen) if shuffle_gen is not None else SequentialSampler(ds)
        sampler = dist.ShardedBatchSampler(BatchSampler(base, batch_size, drop_last=False))
        return DataLoader(dist.ShardMeta(ds), batch_sampler=sampler, generator=shuffle_gen, **workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle_gen is not None, generator=shuffle_gen, **workers)


def _keys(batch: dict) -> pd.DataFrame:
    return pd.DataFrame({k: [x if isinstance(x, str) else int(x) for x in batch[k]]
                         for k in ("dataset", "method", "video_id", "window")}
                        ).assign(label=[int(x) for x in batch["label"]])


@torch.no_grad()
def predict_windows(model, loader: DataLoader, device: torch.device) -> pd.DataFrame:
    """Window-level predictions of a full MRL model over a loader (eval mode, no augmentation)."""
    model.eval()
    keys, logits = [], []
    for batch in loader:
        with autocast(device):
            out, _ = model(clip_batch_to_input(batch["clip"], device))
        logits.append(out.float().cpu())
        keys.append(_keys(batch))
    if not keys:
        return pd.DataFrame(columns=["dataset", "method", "video_id", "window", "label", "prob"])
    return window_predictions(pd.concat(keys, ignore_index=True), logits)


def crops_fingerprint(crop_dir: str) -> str:
    """Identity of the crops a checkpoint was trained on: a checkpoint of other crops is never resumed."""
    from feature_cache import sha256_file

    files = [Path(crop_dir) / "index.csv", Path(crop_dir) / "report.json"]
    return ",".join(sha256_file(f) if f.exists() else "-" for f in files)


def train_encoder(p: Params, crop_dir: str, out_model: Path = OUT_MODEL, run_dir: Path = RUN_DIR) -> dict:
    """Train the encoder jointly with a relation head; return a summary dict (and write the model)."""
    from graph_models import build_model, mrl_loss

    seed_everything(p.seed)
    device = dist.device_for(resolve_device(p.device))
    main = dist.is_main()
    te = p.train_encoder
    model = build_model(p)
    val_loader = window_loader(crop_dir, "val", te.batch_size, te.num_workers, persistent=True)
    if len(val_loader.dataset) == 0:
        raise RuntimeError(f"{crop_dir}: no validation windows; model selection needs a val split")
    n_train = len(window_loader(crop_dir, "train", 1, 0).dataset)
    if n_train == 0:
        raise RuntimeError(f"{crop_dir}: no training windows")

    def train_batches(gen):
        return window_loader(crop_dir, "train", te.batch_size, te.num_workers, shuffle_gen=gen, shard=True)

    def step(model, batch, gen):
        meta = dist.batch_meta(batch)
        if meta is None:
            flip = torch.rand(len(batch["label"]), generator=gen) < te.flip_prob
        else:  # draw for the whole global batch, as one process does, and keep this rank's slice
            gn, off, _ = meta
            flip = (torch.rand(gn, generator=gen) < te.flip_prob)[off:off + len(batch["label"])]
        x = clip_batch_to_input(batch["clip"], device, flip)
        logits, enc = model(x)
        y = batch["label"].to(device).float()
        return mrl_loss(logits.float(), y, enc, te.lambda_od, te.lambda_tc, te.od_variant, te.tc_variant)

    def validate(model):
        w = predict_windows(model, val_loader, device)
        y = torch.tensor(w["label"].to_numpy(), dtype=torch.float32)
        pr = torch.tensor(w["prob"].to_numpy(), dtype=torch.float32).clamp(1e-7, 1 - 1e-7)
        loss = float(torch.nn.functional.binary_cross_entropy(pr, y))
        return {"val_loss": loss, **video_metrics(w)}

    from pipeline.tracking import start_run
    import mlflow

    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with (start_run("train_encoder", p, p.mlflow) if main else contextlib.nullcontext()) as run:
        res = fit(model, train_batches=train_batches, step=step, validate=validate, optim=te, seed=p.seed,
                  device=device, checkpoint=run_dir / "checkpoint.pt",
                  digest=params_digest({**stage_params(p), "data": crops_fingerprint(crop_dir)}),
                  log_epoch=lambda m, e: mlflow.log_metrics({k: v for k, v in m.items() if v == v}, step=e),
                  desc="train_encoder")
        model.load_state_dict(res.best_state)
        if not main:  # rank 0 writes the outputs and logs
            return {"best_epoch": res.best_epoch, "rank": dist.rank(), "train_windows": n_train,
                    "val_windows": len(val_loader.dataset),
                    **{k: v for k, v in res.best_metrics.items() if k.startswith("val_")}}
        enc_state = {k[len("encoder."):]: v for k, v in res.best_state.items() if k.startswith("encoder.")}
        payload = {"format": ENCODER_FORMAT, "state_dict": enc_state,
                   "encoder": p.encoder.model_dump(), "clip": p.clip.model_dump(),
                   "image_size": p.crop.image_size, "crop": crop_config_from_params(p),
                   "out_dim": int(model.encoder.out_dim),
                   "heads": int(p.encoder.heads), "best_epoch": res.best_epoch,
                   "head_state_dict": {k[len("relation."):]: v for k, v in res.best_state.items()
                                       if k.startswith("relation.")},
                   "head": p.train_encoder.relation.model_dump(), "head_mask": p.train_encoder.mask.model_dump()}
        atomic_torch_save(payload, out_model)
        summary = {"best_epoch": res.best_epoch, "epochs_run": len(res.history) - res.resumed_from,
                   "seconds": round(time.time() - t0, 1), "train_windows": n_train,
                   "val_windows": len(val_loader.dataset), "mlflow_run_id": run.info.run_id,
                   **{k: v for k, v in res.best_metrics.items() if k.startswith("val_")}}
        write_csv(pd.DataFrame(res.history), PLOTS)
        write_json(summary, METRICS)
        mlflow.log_metrics({f"best_{k}": v for k, v in summary.items()
                            if isinstance(v, float) and k.startswith("val_") and v == v})
        mlflow.log_artifact(str(PLOTS))
        import mlflow.pytorch
        mlflow.pytorch.log_model(model.cpu(), name="model", serialization_format="pickle")
        write_json({"run_id": run.info.run_id}, run_dir / "mlflow_run.json")
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    with dist.session(p.device):
        s = train_encoder(p, p.crop.out_dir)
        main = dist.is_main()
        dist.barrier()
    if main:
        print(f"train_encoder: best epoch {s['best_epoch']}, val AUC {s.get('val_auc', float('nan')):.4f}, "
          f"{s['train_windows']} train / {s['val_windows']} val windows, {s['seconds']} s -> {OUT_MODEL}")


if __name__ == "__main__":
    main()
