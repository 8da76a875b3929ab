"""Edge masking of the masked relation learner (Sec. III-C, Eq. 1, 6, 7, Algorithm 1).

Masking is a multiplication by a 0/1 indicator ``eta`` (Eq. 1), computed without gradient:
a masked edge contributes nothing and receives zero gradient, a kept edge keeps its value
(no 1/(1-p) rescaling, unlike dropout) and receives the full gradient.

The rule works on a tensor of any shape (a dense N x N matrix ``E`` or a 1-D ``edge_weight``);
``min``/``max`` of Eq. 6 are taken over all its entries.

:class:`EdgeMasking` is the masking a model uses: one ``nn.Module`` holding every setting (strategy, rate,
schedule, what evaluation does), held by the relation learner and restored from a model file.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

import torch
from torch import Tensor, nn

__all__ = ["Strategy", "minimal_mask", "random_mask", "edge_mask", "mask_edges", "EdgeMasking"]

Strategy = Literal["minimal", "random", "none"]
STRATEGIES = ("minimal", "random", "none")
SCHEDULES = ("step", "epoch")
IN_INFERENCE = (False, True, "expected")


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


class EdgeMasking(nn.Module):
    r"""The masking of the learnable edges ``E`` (Eq. 1, 6, 7; Algorithm 1, 2), every setting of it in one
    object: the relation learner holds one (:class:`graph_models.mrl.RelationLearner`), and a model file stores
    its :meth:`config` (``mask`` in ``models/relation.pt``, which ``pipeline.model_io.load_relation`` restores
    with :meth:`from_config`; ``head_mask`` in ``models/encoder.pt``).

    Args (all required: the defaults are ``pipeline.params.MaskParams``'s, and live there only):
        strategy (str): ``'minimal'`` (Eq. 6), ``'random'`` (Eq. 7) or ``'none'`` (no masking).
        rate (float): masking rate :math:`p \in [0, 1]`.
        schedule (str): ``'step'`` draws a new mask at every training forward pass; ``'epoch'`` once per
            epoch (Algorithm 2), renewed by :meth:`new_epoch` (the training loop calls it).
        in_inference: what evaluation multiplies ``E`` by. ``False``: nothing (the paper: the mask is a
            training device); ``True``: a mask drawn as in training (RQ2 ablation); ``'expected'``: the
            expected mask ``E[eta]`` (minimal: the same deterministic mask as in training; random: 1 - p),
            so evaluation sees the graph training saw.

    ``forward(edges)`` is ``eta * E`` (``E`` itself when :meth:`indicator` is None); training or evaluation
    follows the module's mode, i.e. the relation learner's. No parameters, no buffers: the model's
    ``state_dict`` is what it was before this object existed.
    """

    def __init__(self, strategy: Strategy, rate: float, schedule: str, in_inference: Union[bool, str]) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {strategy!r} ({', '.join(STRATEGIES)})")
        if isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"masking rate must lie in [0, 1], got {rate!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"mask schedule must be 'step' or 'epoch', got {schedule!r}")
        if not any(in_inference is v or (isinstance(v, str) and in_inference == v) for v in IN_INFERENCE):
            raise ValueError(f"mask in_inference must be False, True or 'expected', got {in_inference!r}")
        self.strategy, self.rate, self.schedule, self.in_inference = strategy, float(rate), schedule, in_inference
        self._epoch_mask: Optional[Tensor] = None

    @classmethod
    def from_config(cls, cfg: dict) -> "EdgeMasking":
        """The masking :meth:`config` describes (keys ``strategy``, ``rate``, ``in_inference``, ``schedule``)."""
        unknown = set(cfg) - {"strategy", "rate", "in_inference", "schedule"}
        if unknown:
            raise ValueError(f"unknown mask setting(s) {sorted(unknown)} (strategy, rate, in_inference, schedule)")
        missing = [k for k in ("strategy", "rate", "in_inference", "schedule") if k not in cfg]
        if missing:
            raise ValueError(f"mask settings lack {missing} (strategy, rate, in_inference, schedule)")
        return cls(cfg["strategy"], cfg["rate"], cfg["schedule"], cfg["in_inference"])

    def config(self) -> dict:
        """The settings as plain values, keyed and ordered as ``pipeline.params.MaskParams`` dumps them."""
        return {"strategy": self.strategy, "rate": self.rate, "in_inference": self.in_inference,
                "schedule": self.schedule}

    def new_epoch(self) -> None:
        """Forget the epoch's mask (``schedule='epoch'``); the next training forward draws a new one."""
        self._epoch_mask = None

    def indicator(self, edges: Tensor) -> Optional[Tensor]:
        """The 0/1 (or expected) mask ``eta`` this forward pass multiplies ``edges`` by; None for no masking."""
        if self.strategy == "none":
            return None
        if self.training:
            if self.schedule == "epoch":
                if self._epoch_mask is None or self._epoch_mask.device != edges.device:
                    self._epoch_mask = edge_mask(edges, self.rate, self.strategy)
                return self._epoch_mask
            return edge_mask(edges, self.rate, self.strategy)
        if self.in_inference is True:
            return edge_mask(edges, self.rate, self.strategy)
        if self.in_inference == "expected":
            if self.strategy == "random":
                return torch.full_like(edges.detach(), 1.0 - self.rate)
            return edge_mask(edges, self.rate, self.strategy)
        return None

    def forward(self, edges: Tensor) -> Tensor:
        """Eq. 1: ``eta * E`` (``E`` where :meth:`indicator` is None)."""
        eta = self.indicator(edges)
        return edges if eta is None else edges * eta

    def extra_repr(self) -> str:
        return (f"strategy={self.strategy!r}, rate={self.rate}, schedule={self.schedule!r}, "
                f"in_inference={self.in_inference!r}")
