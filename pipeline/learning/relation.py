"""Training the relation learner on the cached vertices: the library behind the ``train_relation`` stage.

Masking (``mask.strategy``, ``mask.rate``) -> relation cell over the T snippets (``relation.cell``: the
dense GConv-GRU of Eq. 8-10 by default, or a torch-geometric-temporal cell) -> MLP -> logit. The epoch is
selected on the validation split; the decision threshold is set at the validation EER
(:func:`relation_payload`).

Under torchrun every rank holds the (small) cached vertices, takes its slice of each global batch
(``train_relation.batch_size`` stays the global batch), and rank 0 validates.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from feature_cache import load_split, open_cache
from graph_models import build_relation
from pipeline import distributed as dist
from pipeline.learning.training import FitResult, fit
from pipeline.params import MaskParams, RelationParams, TrainRelationParams
from pipeline.runtime import params_digest, resolve_device, seed_everything
from pipeline.scoring.inference import predict_vertices
from pipeline.scoring.metrics import threshold_at_eer, video_metrics, video_scores

__all__ = ["RELATION_FORMAT", "RelationTraining", "stage_params", "train_relation", "relation_payload"]

RELATION_FORMAT = "mrl-relation/1"


def stage_params(seed: int, relation: RelationParams, mask: MaskParams, train: TrainRelationParams) -> dict:
    """The params the relation learner depends on (as declared in dvc.yaml), for the checkpoint's digest."""
    return {"seed": seed, "mask": mask.model_dump(), "relation": relation.model_dump(),
            "train_relation": train.model_dump()}


@dataclass
class RelationTraining:
    """What :func:`train_relation` returns: the learner at its best epoch, the record, the val EER threshold."""
    model: torch.nn.Module
    fit: FitResult
    threshold: float
    train_windows: int
    val_windows: int
    shape: tuple  # (T, N, C)
    encoder_sha256: str
    relation: RelationParams  # the settings it was built with (the masking's are in model.masking)


def train_relation(relation: RelationParams, mask: MaskParams, train: TrainRelationParams, features: Path,
                   run_dir: Path, *, seed: int, device: str, encoder_sha256: Optional[str] = None,
                   log_epoch: Callable[[dict, int], None] = lambda m, e: None) -> RelationTraining:
    """Train on ``features`` (refused unless written by the encoder with ``encoder_sha256``, when given), with
    the ``relation``, ``mask`` and ``train_relation`` sections, the ``seed`` and the ``device`` of the params."""
    seed_everything(seed)
    device = dist.device_for(resolve_device(device))
    xtr, ytr, _ = load_split(features, "train", encoder_sha256)
    xva, yva, kva = load_split(features, "val", encoder_sha256)
    if xtr is None or xva is None:
        raise RuntimeError(f"{features}: needs windows in both train and val splits")
    _, T, N, C = xtr.shape
    rel = build_relation(C, N, relation, mask)
    tr = train
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

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    digest = params_digest({**stage_params(seed, relation, mask, train),
                            "features": open_cache(features, verify=False).content_sha256})
    res = fit(rel, train_batches=train_batches, step=step, validate=validate, optim=tr, seed=seed,
              device=device, checkpoint=Path(run_dir) / "checkpoint.pt", digest=digest,
              log_epoch=log_epoch, desc="train_relation")
    rel.load_state_dict(res.best_state)
    thr = float("nan")
    if dist.is_main():
        vids = video_scores(predict_vertices(rel, xva, kva, device))
        thr = float(threshold_at_eer(vids["label"].to_numpy(), vids["score"].to_numpy()))
    return RelationTraining(rel, res, thr, len(xtr), len(xva), (T, N, C), encoder_sha256 or "", relation)


def relation_payload(result: RelationTraining) -> dict:
    """The ``models/relation.pt`` dict: best weights, the settings to rebuild it (the relation section it was
    built with, and its masking's :meth:`~graph_models.masking.EdgeMasking.config`), the validation threshold."""
    T, N, C = result.shape
    return {"format": RELATION_FORMAT, "state_dict": result.fit.best_state, "in_dim": int(C), "heads": int(N),
            "snippets": int(T), "relation": result.relation.model_dump(), "mask": result.model.masking.config(),
            "threshold": float(result.threshold), "encoder_sha256": result.encoder_sha256,
            "best_epoch": result.fit.best_epoch}
