"""The whole model of Fig. 2: ``Encoder`` (backbone + STA, Sec. III-B) and ``RelationLearner``
(masked edges + relation cell + graph classifier, Sec. III-C), and their factories.

Algorithm 2 in shapes::

    x [B, 3, F, H, W] in [0, 1]  --normalise, split into T = F / D snippets-->  [B*T, 3, D, H, W]
    --backbone-->  F_0 [B*T, C, d, h, w]  --STA, Eq. 3-->  V [B, T, N, C], F_A [B, T, N, h, w]
    --mask E (Eq. 1, 6, 7; training only)-->  cell over t (Eq. 8-10)  -->  H^T [B, N, C']
    --flatten (N*C'), MLP-->  one logit per video (fake = 1)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .backbones import build_backbone
from .gconv_gru import adjacency, build_cell, nonnegative_edges
from .masking import EdgeMasking
from .sta import STA

__all__ = ["EncoderOutput", "Encoder", "RelationLearner", "MRLModel", "build_encoder",
           "build_masking", "build_relation", "build_model"]


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
        """C, channels of a vertex (the backbone's; twice that with the STA's ``motion``)."""
        return self.sta.out_channels

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

    def feature_map(self, x: Tensor) -> Tensor:
        """``F_0 [B*T, C, d, h, w]`` of clips ``x`` ``[B, 3, F, H, W]`` in [0, 1]: normalised, filtered, split
        into snippets and through the backbone (the output of :attr:`feature_layer`)."""
        if x.dim() != 5 or x.size(1) != 3:
            raise ValueError(f"expected a clip [B, 3, F, H, W], got {tuple(x.shape)}")
        x = (x - self.mean) / self.std
        if self.input_filter == "highpass":
            x = highpass(x)
        elif self.input_filter == "temporal":
            x = temporal_difference(x)
        return self.backbone(self.split_snippets(x))

    def from_feature_map(self, f0: Tensor, clips: int) -> EncoderOutput:
        """The STA over ``F_0 [B*T, C, d, h, w]`` of ``clips`` = B clips, regrouped per clip (Eq. 3)."""
        if f0.size(0) % clips:
            raise ValueError(f"{f0.size(0)} snippet maps do not split into {clips} clips")
        v, a = self.sta(f0)
        t = f0.size(0) // clips
        return EncoderOutput(v.reshape(clips, t, *v.shape[1:]), a.reshape(clips, t, *a.shape[1:]))

    def forward(self, x: Tensor) -> EncoderOutput:
        return self.from_feature_map(self.feature_map(x), x.size(0))


class RelationLearner(nn.Module):
    """Masked relation learner: learnable edges ``E [N, N]``, their masking, a relation cell over the
    snippets, and the graph classifier (flatten N*C' -> MLP -> one logit).

    Args (the settings are required: their defaults are ``pipeline.params.RelationParams``'s, and live there):
        in_dim (int): C. heads (int): N. cell (nn.Module): see :func:`graph_models.gconv_gru.build_cell`.
        masking (:class:`graph_models.masking.EdgeMasking`): strategy, rate, schedule and what evaluation
            multiplies E by; ``self.masking`` is the only place these live.
        adjacency_mode: ``'raw'`` (paper) / ``'normalized'`` (authors' code) for the dense cells.
        edge_init: ``'gaussian'`` (Sec. III-C, ``E ~ N(0, 1)``), ``'ones'`` (every edge equal: minimal
            masking then keeps all of them until E has learnt an order) or ``'binary'`` (random 0/1, the
            authors' code).
        input_norm: ``'none'`` (paper: the unit vertices of Eq. 3 as they are) or ``'batch'``: BatchNorm
            of every (vertex, channel) over the batch and the snippets before the cell. Unit vertices after
            ReLUs share one dominant direction (cosine 0.9+ between different videos), so what tells videos
            apart is a few percent of each entry; standardising it is what let the model fit the demo's
            training set at all (measured: docs/RESULTS.md, "How the defaults were chosen").
        mlp_hidden, dropout: the classifier.

    ``forward(vertices [B, T, N, C]) -> logits [B]``.
    """

    def __init__(self, in_dim: int, heads: int, cell: nn.Module, masking: EdgeMasking, *, adjacency_mode: str,
                 mlp_hidden: int, dropout: float, edge_init: str, input_norm: str) -> None:
        super().__init__()
        if not isinstance(masking, EdgeMasking):
            raise TypeError(f"masking must be a graph_models.masking.EdgeMasking, got {type(masking).__name__}")
        self.in_dim, self.heads, self.cell = in_dim, heads, cell
        self.adjacency_mode = adjacency_mode
        self.edge_init = edge_init
        if input_norm not in ("none", "batch"):
            raise ValueError(f"input_norm must be 'none' or 'batch', got {input_norm!r}")
        self.input_norm = nn.BatchNorm1d(heads * in_dim) if input_norm == "batch" else None
        self.edges = nn.Parameter(torch.empty(heads, heads))
        feat = heads * cell.out_channels
        self.classifier = nn.Sequential(nn.Linear(feat, mlp_hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(mlp_hidden, 1))
        self.masking = masking
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
        self.masking.new_epoch()

    @property
    def dense_cell(self) -> bool:
        return not hasattr(self.cell, "kind")

    def edge_indicator(self) -> Optional[Tensor]:
        """The 0/1 (or expected) mask ``eta`` this forward pass multiplies E by; None for no masking."""
        return self.masking.indicator(self.edges)

    def masked_edges(self) -> Tensor:
        """Eq. 1: ``eta * E`` (``E`` where :meth:`edge_indicator` is None)."""
        return self.masking(self.edges)

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
        return (f"heads={self.heads}, adjacency={self.adjacency_mode!r}, edge_init={self.edge_init!r}, "
                f"input_norm={'batch' if self.input_norm is not None else 'none'}")

    def __setstate__(self, state: dict) -> None:
        """Unpickling a learner pickled before :class:`EdgeMasking` existed (an MLflow model of an older run):
        its four loose mask attributes become the ``masking`` module."""
        old = ("mask_strategy", "mask_rate", "mask_schedule", "mask_in_inference")
        if "masking" not in state.get("_modules", {}) and all(k in state for k in old):
            masking = EdgeMasking(state.pop("mask_strategy"), state.pop("mask_rate"), state.pop("mask_schedule"),
                                  state.pop("mask_in_inference"))
            masking.train(state.get("training", False))
            masking._epoch_mask = state.pop("_epoch_mask", None)
            state["_modules"]["masking"] = masking
        super().__setstate__(state)


class MRLModel(nn.Module):
    """``forward(x [B, 3, F, H, W]) -> (logits [B], EncoderOutput)``."""

    def __init__(self, encoder: Encoder, relation: RelationLearner) -> None:
        super().__init__()
        self.encoder, self.relation = encoder, relation

    def forward(self, x: Tensor) -> tuple[Tensor, EncoderOutput]:
        enc = self.encoder(x)
        return self.relation(enc.vertices), enc


def build_encoder(encoder, clip) -> Encoder:
    """``Encoder`` from the ``encoder`` section (backbone, pretrained, width, freeze_blocks, temporal_shift, heads,
    sta, attention, pooling, motion, input_filter) and the ``clip`` section (snippet_length = D) of
    ``pipeline.params``."""
    backbone = build_backbone(encoder.backbone, encoder.pretrained, encoder.width, encoder.freeze_blocks,
                              encoder.temporal_shift)
    sta = STA(backbone.out_channels, encoder.heads, attention=encoder.attention,
              pooling=encoder.pooling, enabled=encoder.sta, motion=encoder.motion)
    return Encoder(backbone, sta, clip.snippet_length, encoder.input_filter)


def build_masking(mask) -> EdgeMasking:
    """``EdgeMasking`` from a ``mask`` section (``MaskParams``: strategy, rate, schedule, in_inference)."""
    return EdgeMasking(mask.strategy, mask.rate, mask.schedule, mask.in_inference)


def build_relation(in_dim: int, heads: int, relation, mask) -> RelationLearner:
    """``RelationLearner`` from a ``relation`` section (``RelationParams``: cell, hidden, layers, adjacency,
    cheb_k, mlp_hidden, dropout, edge_init, input_norm) and a ``mask`` section (``MaskParams``), or the
    :class:`EdgeMasking` itself (what a model file restores)."""
    cell = build_cell(relation.cell, in_dim, relation.hidden, relation.layers, relation.cheb_k)
    masking = mask if isinstance(mask, EdgeMasking) else build_masking(mask)
    return RelationLearner(in_dim, heads, cell, masking, adjacency_mode=relation.adjacency,
                           mlp_hidden=relation.mlp_hidden, dropout=relation.dropout, edge_init=relation.edge_init,
                           input_norm=relation.input_norm)


def build_model(encoder, clip, relation, mask) -> MRLModel:
    """The jointly trained model from the sections it needs: ``encoder``, ``clip``, and the head's
    ``relation`` and ``mask`` (the ``train_encoder.relation`` / ``train_encoder.mask`` sections)."""
    enc = build_encoder(encoder, clip)
    rel = build_relation(enc.out_dim, encoder.heads, relation, mask)
    return MRLModel(enc, rel)
