"""Training the encoder (backbone + STA) jointly with a relation head (Eq. 12): the library behind the
``train_encoder`` stage.

The full MRL model (encoder + its own relation head, with the masking settings of
``train_encoder.mask``, separate from the ``mask.*`` swept later) is trained on the face-crop windows;
the epoch is selected on the validation split (video-level AUC). :func:`encoder_payload` turns the result
into the ``models/encoder.pt`` dict: plain tensors and JSON-able metadata, loadable with
``torch.load(weights_only=True)``.

Under torchrun ``train_encoder.batch_size`` stays the global batch (each rank takes its slice of every
global batch of the single-process epoch), BatchNorm becomes SyncBatchNorm on CUDA, and rank 0 validates
(see :mod:`pipeline.distributed`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch.utils.data import DataLoader

from graph_models import build_model, mrl_loss
from pipeline.ingest.augment import AugmentedClips
from pipeline.ingest.clips import ClipDataset, EpochShuffle, PairedShuffle, clip_batch_to_input, window_loader
from pipeline import distributed as dist
from pipeline.learning.training import FitResult, fit
from pipeline.model_card import crop_config_from_params
from pipeline.params import ClipParams, CropParams, EncoderParams, RelationParams, TrainEncoderParams
from pipeline.runtime import autocast, params_digest, resolve_device, seed_everything, sha256_file
from pipeline.scoring.inference import window_predictions
from pipeline.scoring.metrics import video_metrics

__all__ = ["ENCODER_FORMAT", "EncoderTraining", "stage_params", "predict_windows", "crops_fingerprint",
           "memo_bytes", "train_encoder", "encoder_payload", "best_val_metrics"]

ENCODER_FORMAT = "mrl-encoder/1"


def stage_params(seed: int, encoder: EncoderParams, clip: ClipParams, train: TrainEncoderParams,
                 image_size: int) -> dict:
    """The params the encoder depends on (as declared in dvc.yaml), for the checkpoint's digest."""
    return {"seed": seed, "clip": clip.model_dump(), "encoder": encoder.model_dump(),
            "train_encoder": train.model_dump(), "crop": {"image_size": image_size}}


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


def crops_fingerprint(crop_dir: str | Path) -> str:
    """Identity of the crops a checkpoint was trained on: a checkpoint of other crops is never resumed."""
    files = [Path(crop_dir) / "index.csv", Path(crop_dir) / "report.json"]
    return ",".join(sha256_file(f) if f.exists() else "-" for f in files)


@dataclass
class EncoderTraining:
    """What :func:`train_encoder` returns: the model at its best epoch and the training record."""
    model: torch.nn.Module
    fit: FitResult
    train_windows: int
    val_windows: int
    train_videos: int        # the videos and distinct people the training windows come from
    train_identities: int    # (the learning curve's x)
    encoder: EncoderParams   # the settings it was built with (the head's masking is in model.relation.masking)
    clip: ClipParams
    head: RelationParams


def memo_bytes(te: TrainEncoderParams) -> int:
    """The frozen-module memo's budget (:meth:`graph_models.backbones.MobileNetV2Backbone.remember_frozen`):
    none with augmentation, whose clips are new every epoch; with pseudo-fakes only the windows turned fake
    are new (a share ``pseudo_fake_prob`` of the real ones each epoch), every other clip comes back."""
    return 0 if te.augment else te.frozen_memo_mb * 2**20


def train_encoder(encoder: EncoderParams, clip: ClipParams, train: TrainEncoderParams, crop_dir: str | Path,
                  run_dir: Path, *, seed: int, device: str, image_size: int,
                  log_epoch: Callable[[dict, int], None] = lambda m, e: None) -> EncoderTraining:
    """Train the encoder with its relation head, from the ``encoder``, ``clip`` and ``train_encoder`` sections,
    the ``seed``, the ``device`` and the crops' ``image_size`` (part of the checkpoint's identity);
    checkpoints go to ``run_dir`` (resumed when they match)."""
    crop_dir = str(crop_dir)
    seed_everything(seed)
    device = dist.device_for(resolve_device(device))
    te = train
    model = build_model(encoder, clip, te.relation, te.mask)
    pin = device.type == "cuda"  # page-locked batches: the uint8 clips go to the GPU with non_blocking copies
    val_loader = window_loader(crop_dir, "val", te.batch_size, te.num_workers, persistent=True, pin_memory=pin)
    if len(val_loader.dataset) == 0:
        raise RuntimeError(f"{crop_dir}: no validation windows; model selection needs a val split")
    train_index = ClipDataset(crop_dir, split="train").index
    n_train = len(train_index)
    if n_train == 0:
        raise RuntimeError(f"{crop_dir}: no training windows")

    augmented = None
    if te.augment or te.pseudo_fake_prob > 0:
        augmented = AugmentedClips(ClipDataset(crop_dir, split="train", with_landmarks=te.pseudo_fake_prob > 0),
                                   seed, te.pseudo_fake_prob, te.augment)

    # One training loader for all epochs, its workers kept alive (no start-up and HDF5 re-opening per epoch),
    # reshuffled from each epoch generator. Not with augmentation (the workers' copies of the dataset would
    # not see set_epoch) nor under torchrun (the sharded sampler is built per epoch): a loader per epoch there.
    # Paired sampling always goes through its sampler (with any number of workers, augmentation or torchrun).
    persistent_train = te.num_workers > 0 and augmented is None and not dist.is_distributed()
    paired = PairedShuffle(train_index) if te.sampling == "paired" else None
    if persistent_train:
        order = paired or EpochShuffle(n_train)
        train_loader = window_loader(crop_dir, "train", te.batch_size, te.num_workers, sampler=order,
                                     persistent=True, pin_memory=pin)

    def train_batches(gen):
        if persistent_train:
            order.set_generator(gen)
            return train_loader
        if augmented is not None:  # new augmentation draws every epoch, from the epoch generator
            augmented.set_epoch(int(torch.randint(0, 2**31, (1,), generator=gen)))
        if paired is not None:
            paired.set_generator(gen)
        return window_loader(crop_dir, "train", te.batch_size, te.num_workers, shuffle_gen=gen, shard=True,
                             dataset=augmented, sampler=paired, pin_memory=pin)

    def step(model, batch, gen):
        meta = dist.batch_meta(batch)
        if meta is None:
            flip = torch.rand(len(batch["label"]), generator=gen) < te.flip_prob
        else:  # draw for the whole global batch, as one process does, and keep this rank's slice
            gn, off, _ = meta
            flip = (torch.rand(gn, generator=gen) < te.flip_prob)[off:off + len(batch["label"])]
        x = clip_batch_to_input(batch["clip"], device, flip)
        logits, enc = model(x)
        y = batch["label"].to(device, non_blocking=True).float()
        return mrl_loss(logits.float(), y, enc, te.lambda_od, te.lambda_tc, te.od_variant, te.tc_variant,
                        te.od_reduction)

    def validate(model):
        w = predict_windows(model, val_loader, device)
        y = torch.tensor(w["label"].to_numpy(), dtype=torch.float32)
        pr = torch.tensor(w["prob"].to_numpy(), dtype=torch.float32).clamp(1e-7, 1 - 1e-7)
        loss = float(torch.nn.functional.binary_cross_entropy(pr, y))
        return {"val_loss": loss, **video_metrics(w)}

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    # the frozen backbone modules' output per clip, reused from the second epoch on; the digest leaves
    # frozen_memo_mb out, since it changes no number
    digest = params_digest({**stage_params(seed, encoder, clip, te.model_copy(update={"frozen_memo_mb": 0}),
                                           image_size), "data": crops_fingerprint(crop_dir)})
    remember = getattr(model.encoder.backbone, "remember_frozen", None)
    if remember is not None:
        remember(memo_bytes(te))
    try:
        res = fit(model, train_batches=train_batches, step=step, validate=validate, optim=te, seed=seed,
                  device=device, checkpoint=Path(run_dir) / "checkpoint.pt", digest=digest,
                  log_epoch=log_epoch, desc="train_encoder")
    finally:
        if remember is not None:
            remember(0)
    model.load_state_dict(res.best_state)
    return EncoderTraining(model, res, n_train, len(val_loader.dataset),
                           train_videos=len(train_index.drop_duplicates(["dataset", "method", "video_id"])),
                           train_identities=len(train_index.drop_duplicates(["dataset", "identity"])),
                           encoder=encoder, clip=clip, head=te.relation)


def encoder_payload(result: EncoderTraining, crop: CropParams) -> dict:
    """The ``models/encoder.pt`` dict: the best encoder weights, its head, and what inference must reproduce
    (the settings it was built with, and the ``crop`` settings of the crops it was trained on)."""
    state = result.fit.best_state
    return {"format": ENCODER_FORMAT,
            "state_dict": {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")},
            "encoder": result.encoder.model_dump(), "clip": result.clip.model_dump(),
            "image_size": crop.image_size, "crop": crop_config_from_params(crop, result.clip),
            "out_dim": int(result.model.encoder.out_dim), "heads": int(result.encoder.heads),
            "best_epoch": result.fit.best_epoch,
            "head_state_dict": {k[len("relation."):]: v for k, v in state.items() if k.startswith("relation.")},
            "head": result.head.model_dump(), "head_mask": result.model.relation.masking.config()}


def best_val_metrics(res: FitResult) -> dict:
    """The validation metrics of the selected epoch."""
    return {k: v for k, v in res.best_metrics.items() if k.startswith("val_")}

