"""The whole model of Fig. 2: ``Encoder`` (backbone + STA, Sec. III-B) and ``RelationLearner``
(masked edges + relation cell + graph classifier, Sec. III-C), and their factories.

Algorithm 2 in shapes::

    x [B, 3, F, H, W] in [0, 1]  --normalise, split into T = F / D snippets-->  [B*T, 3, D, H, W]
    --backbone-->  F_0 [B*T, C, d, h, w]  --STA, Eq. 3-->  V [B, T, N, C], F_A [B, T, N, h, w]
    --mask E (Eq. 1, 6, 7; training only)-->  cell over t (Eq. 8-10)  -->  H^T [B, N, C']
    --flatten (N*C'), MLP-->  one logit per video (fake = 1)
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from .backbones import build_backbone
from .gconv_gru import adjacency, build_cell, nonnegative_edges
from .masking import edge_mask
from .sta import STA

__all__ = ["EncoderOutput", "Encoder", "RelationLearner", "MRLModel", "build_encoder",
           "build_relation", "build_model"]


class EncoderOutput(NamedTuple):
    """``vertices [B, T, N, C]`` (unit L2 rows, Eq. 3) and ``attention [B, T, N, h, w]`` (F_A)."""

    vertices: Tensor
    attention: Tensor


INPUT_FILTERS = ("none", "highpass", "temporal")


def highpass(x: Tensor) -> Tensor:
    r"""Spatial high-pass residual of every frame and channel: :math:`x - \bar{x}_{3\times3}`, the local
    mean taken over the 3 x 3 neighbourhood (edges replicated). ``x`` ``[B, C, F, H, W]``; a constant or
    linear ramp gives 0 (away from the border)."""
    b, c, f, h, w = x.shape
    y = x.transpose(1, 2).reshape(b * f, c, h, w)
    mean = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(y, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (y - mean).reshape(b, f, c, h, w).transpose(1, 2)


def temporal_difference(x: Tensor) -> Tensor:
    """Each frame minus the previous one, over the whole clip (so across snippet borders); the first frame's
    difference is 0. ``x`` ``[B, C, F, H, W]``."""
    return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)


class Encoder(nn.Module):
    """Backbone + STA applied to each of the T snippets of D frames.

    Args:
        backbone: module ``[B, 3, D, H, W] -> [B, C, d, h, w]`` with ``out_channels``, ``mean``,
            ``std`` and ``feature_layer``.
        sta: :class:`graph_models.sta.STA` with ``in_channels = backbone.out_channels``.
        snippet_length (int): D.
        input_filter (str): what the backbone sees (not in the paper): ``'none'`` the normalised frames;
            ``'highpass'`` each frame minus its 3 x 3 local mean (:func:`highpass`), the fine texture where
            blending and resampling leave traces, with the face's shape and colour largely removed;
            ``'temporal'`` each frame minus the previous one (:func:`temporal_difference`).

    ``forward(x)``: ``x`` float in [0, 1], ``[B, 3, F, H, W]`` with ``F`` a multiple of D; the
    input is normalised here with the backbone's fixed mean/std (the same at train and test).
    """

    def __init__(self, backbone: nn.Module, sta: STA, snippet_length: int, input_filter: str = "none") -> None:
        super().__init__()
        if input_filter not in INPUT_FILTERS:
            raise ValueError(f"input_filter must be one of {INPUT_FILTERS}, got {input_filter!r}")
        self.backbone, self.sta, self.snippet_length = backbone, sta, snippet_length
        self.input_filter = input_filter
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1, 1), persistent=False)

    @property
    def out_dim(self) -> int:
        """C, channels of a vertex."""
        return self.backbone.out_channels

    @property
    def heads(self) -> int:
        """N, number of vertices."""
        return self.sta.heads

    @property
    def feature_layer(self) -> nn.Module:
        """The last backbone block (Grad-CAM target)."""
        return self.backbone.feature_layer

    def split_snippets(self, x: Tensor) -> Tensor:
        """``[B, 3, T*D, H, W] -> [B*T, 3, D, H, W]`` (consecutive frames per snippet)."""
        b, c, f, h, w = x.shape
        d = self.snippet_length
        if f % d:
            raise ValueError(f"clip of {f} frames is not a multiple of the snippet length {d}")
        return x.reshape(b, c, f // d, d, h, w).transpose(1, 2).reshape(b * (f // d), c, d, h, w)

    def forward(self, x: Tensor) -> EncoderOutput:
        if x.dim() != 5 or x.size(1) != 3:
            raise ValueError(f"expected a clip [B, 3, F, H, W], got {tuple(x.shape)}")
        b, t = x.size(0), x.size(2) // self.snippet_length
        x = (x - self.mean) / self.std
        if self.input_filter == "highpass":
            x = highpass(x)
        elif self.input_filter == "temporal":
            x = temporal_difference(x)
        f0 = self.backbone(self.split_snippets(x))
        v, a = self.sta(f0)
        return EncoderOutput(v.reshape(b, t, *v.shape[1:]), a.reshape(b, t, *a.shape[1:]))


class RelationLearner(nn.Module):
    """Masked relation learner: learnable edges ``E [N, N]``, masking, a relation cell over the
    snippets, and the graph classifier (flatten N*C' -> MLP -> one logit).

    Args:
        in_dim (int): C. heads (int): N. cell (nn.Module): see :func:`graph_models.gconv_gru.build_cell`.
        adjacency_mode: ``'raw'`` (paper) / ``'normalized'`` (authors' code) for the dense cells.
        mask_strategy, mask_rate: Eq. 6 / 7 (``'none'`` off).
        mask_in_inference: what evaluation multiplies E by. ``False``: nothing (the paper: the mask is a
            training device); ``True``: a mask drawn as in training (RQ2 ablation); ``'expected'``: the
            expected mask, ``E[eta]`` (minimal: the same deterministic mask as in training; random: 1 - p),
            so evaluation sees the graph training saw.
        mask_schedule: ``'step'`` draws a new mask at every training forward pass; ``'epoch'`` once per
            epoch (Algorithm 2), renewed by :meth:`new_epoch`.
        edge_init: ``'gaussian'`` (Sec. III-C, ``E ~ N(0, 1)``), ``'ones'`` (every edge equal: minimal
            masking then keeps all of them until E has learnt an order) or ``'binary'`` (random 0/1, the
            authors' code).
        input_norm: ``'none'`` (paper: the unit vertices of Eq. 3 as they are) or ``'batch'``: BatchNorm
            of every (vertex, channel) over the batch and the snippets before the cell. Unit vertices after
            ReLUs share one dominant direction (cosine 0.9+ between different videos), so what tells videos
            apart is a few percent of each entry; standardising it is what let the model fit the demo's
            training set at all (measured, README).
        mlp_hidden, dropout: the classifier.

    ``forward(vertices [B, T, N, C]) -> logits [B]``.
    """

    def __init__(self, in_dim: int, heads: int, cell: nn.Module, adjacency_mode: str = "raw",
                 mask_strategy: str = "minimal", mask_rate: float = 0.5,
                 mask_in_inference: Union[bool, str] = False, mlp_hidden: int = 256, dropout: float = 0.5,
                 edge_init: str = "gaussian", mask_schedule: str = "step", input_norm: str = "none") -> None:
        super().__init__()
        if mask_in_inference not in (False, True, "expected"):
            raise ValueError(f"mask_in_inference must be False, True or 'expected', got {mask_in_inference!r}")
        if mask_schedule not in ("step", "epoch"):
            raise ValueError(f"mask_schedule must be 'step' or 'epoch', got {mask_schedule!r}")
        self.in_dim, self.heads, self.cell = in_dim, heads, cell
        self.adjacency_mode = adjacency_mode
        self.mask_strategy, self.mask_rate, self.mask_in_inference = mask_strategy, mask_rate, mask_in_inference
        self.mask_schedule, self.edge_init = mask_schedule, edge_init
        self._epoch_mask: Optional[Tensor] = None
        if input_norm not in ("none", "batch"):
            raise ValueError(f"input_norm must be 'none' or 'batch', got {input_norm!r}")
        self.input_norm = nn.BatchNorm1d(heads * in_dim) if input_norm == "batch" else None
        self.edges = nn.Parameter(torch.empty(heads, heads))
        feat = heads * cell.out_channels
        self.classifier = nn.Sequential(nn.Linear(feat, mlp_hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(mlp_hidden, 1))
        self.reset_edges()

    def reset_edges(self) -> None:
        """Initialise E as ``edge_init`` says (see the class docstring)."""
        with torch.no_grad():
            if self.edge_init == "gaussian":
                nn.init.normal_(self.edges)
            elif self.edge_init == "ones":
                self.edges.fill_(1.0)
            elif self.edge_init == "binary":
                self.edges.copy_(torch.bernoulli(torch.full_like(self.edges, 0.5)))
            else:
                raise ValueError(f"edge_init must be 'gaussian', 'ones' or 'binary', got {self.edge_init!r}")
        self._epoch_mask = None

    def new_epoch(self) -> None:
        """Forget the epoch's mask (``mask_schedule='epoch'``); the next training forward draws a new one."""
        self._epoch_mask = None

    @property
    def dense_cell(self) -> bool:
        return not hasattr(self.cell, "kind")

    def edge_indicator(self) -> Optional[Tensor]:
        """The 0/1 (or expected) mask ``eta`` this forward pass multiplies E by; None for no masking."""
        if self.mask_strategy == "none":
            return None
        if self.training:
            if self.mask_schedule == "epoch":
                if self._epoch_mask is None or self._epoch_mask.device != self.edges.device:
                    self._epoch_mask = edge_mask(self.edges, self.mask_rate, self.mask_strategy)
                return self._epoch_mask
            return edge_mask(self.edges, self.mask_rate, self.mask_strategy)
        if self.mask_in_inference is True:
            return edge_mask(self.edges, self.mask_rate, self.mask_strategy)
        if self.mask_in_inference == "expected":
            if self.mask_strategy == "random":
                return torch.full_like(self.edges.detach(), 1.0 - self.mask_rate)
            return edge_mask(self.edges, self.mask_rate, self.mask_strategy)
        return None

    def masked_edges(self) -> Tensor:
        """Eq. 1: ``eta * E`` (``E`` where :meth:`edge_indicator` is None)."""
        eta = self.edge_indicator()
        return self.edges if eta is None else self.edges * eta

    def normalize_input(self, vertices: Tensor) -> Tensor:
        """``input_norm='batch'``: BatchNorm of the ``N*C`` entries over batch and snippets; else unchanged."""
        if self.input_norm is None:
            return vertices
        b, t, n, c = vertices.shape
        return self.input_norm(vertices.reshape(b * t, n * c)).reshape(b, t, n, c)

    def relation_features(self, vertices: Tensor) -> Tensor:
        """The last hidden graph ``H^T [B, N, C']`` (before flattening)."""
        vertices = self.normalize_input(vertices)
        if self.dense_cell:
            return self.cell(vertices, adjacency(self.masked_edges(), self.adjacency_mode))
        return self.cell(vertices, nonnegative_edges(self.edges, self.edge_indicator()))

    def forward(self, vertices: Tensor) -> Tensor:
        if vertices.dim() != 4 or vertices.size(2) != self.heads or vertices.size(3) != self.in_dim:
            raise ValueError(f"expected vertices [B, T, {self.heads}, {self.in_dim}], got {tuple(vertices.shape)}")
        return self.classifier(self.relation_features(vertices).flatten(1)).squeeze(-1)

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, adjacency={self.adjacency_mode!r}, mask={self.mask_strategy!r}@"
                f"{self.mask_rate}/{self.mask_schedule}, mask_in_inference={self.mask_in_inference}, "
                f"edge_init={self.edge_init!r}, input_norm={'batch' if self.input_norm is not None else 'none'}")


class MRLModel(nn.Module):
    """``forward(x [B, 3, F, H, W]) -> (logits [B], EncoderOutput)``."""

    def __init__(self, encoder: Encoder, relation: RelationLearner) -> None:
        super().__init__()
        self.encoder, self.relation = encoder, relation

    def forward(self, x: Tensor) -> tuple[Tensor, EncoderOutput]:
        enc = self.encoder(x)
        return self.relation(enc.vertices), enc


def build_encoder(encoder, clip) -> Encoder:
    """``Encoder`` from ``EncoderParams`` (backbone, pretrained, width, freeze_blocks, heads, sta, attention,
    pooling) and ``ClipParams`` (snippet_length = D)."""
    backbone = build_backbone(encoder.backbone, encoder.pretrained, encoder.width,
                              getattr(encoder, "freeze_blocks", 0))
    sta = STA(backbone.out_channels, encoder.heads, attention=encoder.attention,
              pooling=encoder.pooling, enabled=encoder.sta)
    return Encoder(backbone, sta, clip.snippet_length, getattr(encoder, "input_filter", "none"))


def build_relation(in_dim: int, heads: int, relation, mask) -> RelationLearner:
    """``RelationLearner`` from ``RelationParams`` (cell, hidden, layers, adjacency, cheb_k,
    mlp_hidden, dropout, edge_init) and ``MaskParams`` (strategy, rate, in_inference, schedule)."""
    cell = build_cell(relation.cell, in_dim, relation.hidden, relation.layers, relation.cheb_k)
    return RelationLearner(in_dim, heads, cell, relation.adjacency, mask.strategy, mask.rate,
                           mask.in_inference, relation.mlp_hidden, relation.dropout,
                           getattr(relation, "edge_init", "gaussian"), getattr(mask, "schedule", "step"),
                           getattr(relation, "input_norm", "none"))


def build_model(params) -> MRLModel:
    """The jointly trained model from ``pipeline.params.Params``: ``params.encoder``,
    ``params.clip``, ``params.train_encoder.relation`` and ``params.train_encoder.mask``."""
    enc = build_encoder(params.encoder, params.clip)
    rel = build_relation(enc.out_dim, params.encoder.heads, params.train_encoder.relation,
                         params.train_encoder.mask)
    return MRLModel(enc, rel)
