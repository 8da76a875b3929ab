"""The per-window computation shared by ``evaluate`` and ``mrl detect``: crops -> encoder -> vertices ->
relation learner -> fake probability.

* :func:`encode_clips` – the encoder over uint8 windows ``[B, F, S, S, 3]`` in evaluation mode, exactly as the
  ``cache_features`` stage does it (``clip_batch_to_input``, mixed precision on CUDA, float32 vertices out).
* :func:`relation_logits` / :func:`predict_vertices` – the relation learner over vertices ``[W, T, N, C]``, as
  ``evaluate`` scores the cached features; :func:`predict_vertices` returns the key table with ``prob`` (the
  sigmoid of the logit, :func:`window_predictions`).
* :func:`window_probs` – both for a stack of windows (what ``detect`` runs on the crops of one video).

A video's score is then :func:`pipeline.scoring.metrics.video_scores` (mean over its windows) in both paths.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch

from pipeline.ingest.clips import clip_batch_to_input
from pipeline.runtime import autocast

__all__ = ["KEY_COLUMNS", "window_predictions", "encode_clips", "relation_logits", "predict_vertices", "window_probs"]

KEY_COLUMNS = ["dataset", "method", "video_id", "window", "label"]


def window_predictions(keys: pd.DataFrame, logits: Iterable[torch.Tensor]) -> pd.DataFrame:
    """Attach window-level fake probabilities (sigmoid of the logits) to the key table."""
    probs = torch.cat([torch.as_tensor(x).float().reshape(-1) for x in logits]).sigmoid().numpy()
    out = keys.reset_index(drop=True).copy()
    if len(out) != len(probs):
        raise ValueError(f"{len(out)} keys but {len(probs)} predictions")
    out["prob"] = probs.astype(np.float64)
    return out


@torch.no_grad()
def encode_clips(encoder, clips, device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """Vertices ``float32 [W, T, N, C]`` (CPU) of uint8 windows ``[W, F, S, S, 3]`` (tensor or array)."""
    encoder.eval()
    clips = torch.as_tensor(np.asarray(clips)) if not isinstance(clips, torch.Tensor) else clips
    out = []
    for i in range(0, len(clips), batch_size):
        with autocast(device):
            v = encoder(clip_batch_to_input(clips[i:i + batch_size], device)).vertices
        out.append(v.float().cpu())
    if not out:
        raise ValueError("encode_clips: no windows")
    return torch.cat(out)


@torch.no_grad()
def relation_logits(relation, vertices: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Logits ``[W]`` (CPU, float32) of the relation learner (evaluation mode: no edge masking)."""
    relation.eval()
    return torch.cat([relation(vertices[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(vertices), batch_size)])


def predict_vertices(relation, vertices: torch.Tensor, keys: pd.DataFrame, device: torch.device,
                     batch_size: int = 256) -> pd.DataFrame:
    """``keys`` (columns :data:`KEY_COLUMNS`, one row per window) with the fake probability ``prob``."""
    return window_predictions(keys[KEY_COLUMNS], [relation_logits(relation, vertices, device, batch_size)])


def window_probs(encoder, relation, clips: torch.Tensor | np.ndarray, device: torch.device,
                 batch_size: int = 8) -> np.ndarray:
    """Fake probabilities ``float64 [W]`` of uint8 windows ``[W, F, S, S, 3]``: encoder -> relation."""
    v = encode_clips(encoder, clips, device, batch_size)
    keys = pd.DataFrame({"dataset": "", "method": "", "video_id": "", "window": np.arange(len(v)), "label": 0})
    return predict_vertices(relation, v, keys, device)["prob"].to_numpy()


def stack_windows(items: Iterable[np.ndarray]) -> torch.Tensor:
    """uint8 windows as one tensor ``[W, F, S, S, 3]``."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(list(items))).astype(np.uint8, copy=False))
