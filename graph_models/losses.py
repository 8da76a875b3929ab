"""Losses of Sec. III-B and III-C: Eq. 4 (orthogonal diversity), Eq. 5 (temporal consistency),
Eq. 11 (cross-entropy) and their sum Eq. 12, plus the variants of the authors' public code.

Shapes: vertices ``V`` are ``[B, T, N, C]`` (L2-normalised per vertex by Eq. 3), attention
maps ``A`` are ``[B, T, N, ...]``. Every loss is averaged over the batch.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["orthogonal_diversity_loss", "temporal_consistency_loss", "attention_cosine_loss",
           "attention_l1_consistency_loss", "classification_loss", "mrl_loss"]


def orthogonal_diversity_loss(vertices: Tensor, reduction: Literal["sum", "pairs"] = "sum") -> Tensor:
    """Eq. 4: ``L_od = 1/T sum_t ||V^t V^t' - I||_F^2`` (mean over the batch).

    Args:
        vertices: ``[B, T, N, C]``.
        reduction: ``'sum'`` is Eq. 4 as written (the squared Frobenius norm, a sum over the N^2
            entries); ``'pairs'`` divides it by the N(N-1) ordered pairs i != j, i.e. the mean squared
            cosine between two different vertices (the diagonal is 0 for unit vertices). With N = 12
            and vertices after ReLUs (nearly collinear at initialisation) ``'sum'`` starts near 130
            against a cross-entropy of 0.69 and swamps it (measured: docs/RESULTS.md, "How the defaults
            were chosen"); ``'pairs'`` starts near 1.
    """
    gram = vertices @ vertices.transpose(-1, -2)                      # [B, T, N, N]
    n = gram.size(-1)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    loss = (gram - eye).pow(2).sum(dim=(-2, -1)).mean()               # mean over T and B
    if reduction == "pairs":
        return loss / max(n * (n - 1), 1)
    if reduction != "sum":
        raise ValueError(f"od reduction must be 'sum' or 'pairs', got {reduction!r}")
    return loss


def temporal_consistency_loss(vertices: Tensor) -> Tensor:
    """Eq. 5: ``L_tc = 1/N sum_{t=1}^{T-1} ||V^t - V^{t-1}||_2`` (mean over the batch).

    ``||.||_2`` is read per vertex: the L2 distance of each vertex to itself in the previous
    snippet, summed over the N vertices and the T-1 adjacent pairs, divided by N (so the loss
    is the summed-over-time mean per-vertex distance). Zero when T == 1.
    """
    n = vertices.size(-2)
    step = (vertices[:, 1:] - vertices[:, :-1]).norm(dim=-1)          # [B, T-1, N]
    return step.sum(dim=(1, 2)).mean() / n


def attention_cosine_loss(attention: Tensor) -> Tensor:
    """Authors'-code L_od: mean cosine similarity between the N attention maps of a snippet
    (over the N(N-1) ordered pairs i != j, then over T and the batch).

    Args:
        attention: ``[B, T, N, ...]``.
    """
    a = F.normalize(attention.flatten(3), dim=-1)                     # [B, T, N, P]
    cos = a @ a.transpose(-1, -2)                                     # [B, T, N, N]
    n = cos.size(-1)
    if n < 2:
        return cos.new_zeros(())
    off = cos.sum(dim=(-2, -1)) - cos.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (off / (n * (n - 1))).mean()


def attention_l1_consistency_loss(attention: Tensor) -> Tensor:
    """Authors'-code L_tc: mean absolute difference between the attention maps of adjacent
    snippets (mean over all entries of the T-1 differences and the batch). Zero when T == 1."""
    if attention.size(1) < 2:
        return attention.new_zeros(())
    return (attention[:, 1:] - attention[:, :-1]).abs().mean()


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Eq. 11: binary cross-entropy of the one-logit classifier (label 1 = fake), batch mean."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def mrl_loss(logits: Tensor, labels: Tensor, enc_out, lambda_od: float = 0.75,
             lambda_tc: float = 0.75, od_variant: Literal["paper", "cosine"] = "paper",
             tc_variant: Literal["paper", "l1"] = "paper",
             od_reduction: Literal["sum", "pairs"] = "sum") -> dict[str, Tensor]:
    """Eq. 12: ``L = L_ce + lambda_od * L_od + lambda_tc * L_tc``.

    Args:
        logits: ``[B]``, one logit per video (fake = 1).
        labels: ``[B]`` 0/1.
        enc_out: an :class:`graph_models.mrl.EncoderOutput` (``vertices`` and ``attention``).
        lambda_od, lambda_tc: weights; 0 switches a term off (Table IV "w/o L_od", "w/o L_tc";
            the term is still computed and returned for logging).
        od_variant: ``'paper'`` (Eq. 4 on vertices) or ``'cosine'`` (attention maps, authors' code).
        tc_variant: ``'paper'`` (Eq. 5 on vertices) or ``'l1'`` (attention maps, authors' code).
        od_reduction: for ``od_variant='paper'``: ``'sum'`` (Eq. 4 as written) or ``'pairs'`` (per pair);
            see :func:`orthogonal_diversity_loss`.

    Returns:
        ``dict(total, ce, od, tc)`` of scalar tensors.
    """
    ce = classification_loss(logits, labels)
    if od_variant == "paper":
        od = orthogonal_diversity_loss(enc_out.vertices, od_reduction)
    elif od_variant == "cosine":
        od = attention_cosine_loss(enc_out.attention)
    else:
        raise ValueError(f"od_variant must be 'paper' or 'cosine', got {od_variant!r}")
    if tc_variant == "paper":
        tc = temporal_consistency_loss(enc_out.vertices)
    elif tc_variant == "l1":
        tc = attention_l1_consistency_loss(enc_out.attention)
    else:
        raise ValueError(f"tc_variant must be 'paper' or 'l1', got {tc_variant!r}")
    total = ce
    if lambda_od:
        total = total + lambda_od * od
    if lambda_tc:
        total = total + lambda_tc * tc
    return {"total": total, "ce": ce, "od": od, "tc": tc}
