"""Edge masking of the masked relation learner (Sec. III-C, Eq. 1, 6, 7, Algorithm 1).

Masking is a multiplication by a 0/1 indicator ``eta`` (Eq. 1), computed without gradient:
a masked edge contributes nothing and receives zero gradient, a kept edge keeps its value
(no 1/(1-p) rescaling, unlike dropout) and receives the full gradient.

The rule works on a tensor of any shape (a dense N x N matrix ``E`` or a 1-D ``edge_weight``);
``min``/``max`` of Eq. 6 are taken over all its entries.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = ["Strategy", "minimal_mask", "random_mask", "edge_mask", "mask_edges", "EdgeMasking"]

Strategy = Literal["minimal", "random", "none"]


def minimal_mask(edges: Tensor, rate: float) -> Tensor:
    """Eq. 6: ``q = E_min + (E_max - E_min) * p``; ``eta_ij = 0`` where ``E_ij < q``, else 1.

    Rate 0 keeps every entry (q = E_min); rate 1 keeps only the entries equal to E_max.
    (Algorithm 1 writes ``ops.gt`` which would also drop the minimum at rate 0; Eq. 6's
    ``>= q`` is used.) Returns a float 0/1 tensor shaped like ``edges``.

    The mask depends on E alone, and masked entries get zero gradient: in training they never move (Adam,
    no weight decay), so they stay masked; the mask changes only if the kept entries move q (through E_max)
    past them. Minimal masking thus prunes a fixed set of edges chosen by the initial E (README, "What
    minimal masking does to E").
    """
    e = edges.detach().double()
    lo, hi = e.min(), e.max()
    # q in float64 and never above the maximum: in float32, lo + (hi - lo) * 1.0 rounds above hi for about
    # a quarter of Gaussian 12 x 12 matrices and rate 1 would then drop every edge
    q = torch.minimum(lo + (hi - lo) * rate, hi)
    return (e >= q).to(edges.dtype)


def random_mask(edges: Tensor, rate: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Eq. 7: ``eta ~ Bernoulli``, each edge is zeroed with probability ``p = rate`` (Algorithm 1's printed
    ``gt(E, dropout(E))`` is not used: it keeps about half of a Gaussian E whatever p is; README).

    Returns a float 0/1 tensor shaped like ``edges`` (no rescaling of the kept entries).
    """
    keep = torch.full_like(edges.detach(), 1.0 - rate)
    return torch.bernoulli(keep, generator=generator)


def edge_mask(edges: Tensor, rate: float, strategy: Strategy,
              generator: Optional[torch.Generator] = None) -> Tensor:
    """The indicator ``eta`` of Algorithm 1 for ``strategy`` (all ones for ``'none'``)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"masking rate must lie in [0, 1], got {rate}")
    if strategy == "minimal":
        return minimal_mask(edges, rate)
    if strategy == "random":
        return random_mask(edges, rate, generator)
    if strategy == "none":
        return torch.ones_like(edges.detach())
    raise ValueError(f"unknown masking strategy {strategy!r} (minimal, random, none)")


def mask_edges(edges: Tensor, rate: float, strategy: Strategy,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """Eq. 1: ``E_ij <- eta_ij * E_ij`` with ``eta`` from :func:`edge_mask`.

    Args:
        edges: learnable edges, any shape (dense ``[N, N]`` in the model).
        rate: masking rate ``p`` in [0, 1].
        strategy: ``'minimal'`` (Eq. 6), ``'random'`` (Eq. 7) or ``'none'``.
        generator: optional torch generator for ``'random'``.

    Returns:
        the masked edges, same shape; differentiable w.r.t. ``edges`` (zero gradient where masked).
    """
    if strategy == "none" or (strategy == "minimal" and rate == 0.0):
        return edges
    return edges * edge_mask(edges, rate, strategy, generator)


class EdgeMasking(BaseTransform):
    r"""Masks a graph's ``edge_weight`` with the rule of :func:`mask_edges` (Eq. 1, 6, 7).

    Args:
        rate (float): masking rate :math:`p \in [0, 1]`.
        strategy (str): ``'minimal'``, ``'random'`` or ``'none'``. (default: ``'minimal'``)
        generator (torch.Generator, optional): random source for ``'random'``.

    A ``Data`` without ``edge_weight`` gets weights of ones first (so ``'minimal'`` keeps all
    of them and ``'random'`` drops a fraction ``p``).
    """

    def __init__(self, rate: float, strategy: Strategy = "minimal",
                 generator: Optional[torch.Generator] = None) -> None:
        edge_mask(torch.zeros(1), rate, strategy)  # validates rate and strategy
        self.rate = rate
        self.strategy = strategy
        self.generator = generator

    def forward(self, data: Data) -> Data:
        w = data.edge_weight if getattr(data, "edge_weight", None) is not None else \
            torch.ones(data.edge_index.size(1))
        data.edge_weight = mask_edges(w, self.rate, self.strategy, self.generator)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(rate={self.rate}, strategy={self.strategy!r})"
