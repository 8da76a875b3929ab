"""SpatioTemporal Attention (Sec. III-B) and the vertices of Eq. 3.

``F_0`` (backbone features of one snippet) is ``[B, C, d, h, w]``. The STA module turns it into N
attention maps ``F_A`` of shape ``[B, N, h, w]`` (two blocks conv -> BatchNorm -> ReLU; the
time axis of the last block's output is averaged, so ``F_A`` has the paper's shape N x H x W),
and Eq. 3 pools ``F = F_0 * F_A`` into N vertices of C channels, L2-normalised per vertex.

Ablations: ``attention='spatial'`` (2D convs per frame, maps averaged over frames: Table IV
"Spatial attention"), ``enabled=False`` (maps of ones: Table V "graph only"), ``pooling='max'``
(Table IV "Max pooling").

Not in the paper: ``motion=True`` appends to each vertex the same pooling of the frame-to-frame change
``|F_0[t] - F_0[t-1]|`` (:func:`motion_pooling`, relative to Eq. 3's sum), so a vertex says how much its
region changes within the snippet as well as what it looks like; Eq. 3 alone sums over time, which averages
a fast motion (a mouth opening and closing a few times a second) away.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["attention_features", "normalized_average_pooling", "normalized_max_pooling", "pooled_sum",
           "vertices_from_attention", "frame_change", "motion_pooling", "ConvBlock3d", "ConvBlock2d", "STA"]


def attention_features(f0: Tensor, attention: Tensor) -> Tensor:
    """Eq. 3, first line: ``F = F_0 ⊙ F_A`` per head.

    Args:
        f0: ``[B, C, d, h, w]``; attention: ``[B, N, h, w]`` (broadcast over time) or ``[B, N, d, h, w]``.

    Returns:
        ``[B, N, C, d, h, w]``.
    """
    if attention.dim() == 4:
        attention = attention.unsqueeze(2)                            # [B, N, 1, h, w]
    return f0.unsqueeze(1) * attention.unsqueeze(2)


def normalized_average_pooling(features: Tensor) -> Tensor:
    """Eq. 3, second line: ``V = sum_ij F_ij / ||sum_ij F_ij||_2`` per vertex.

    Args:
        features: ``[B, N, C, *S]`` (S: the pooled positions, here d, h, w).

    Returns:
        ``[B, N, C]``, each row of unit L2 norm (zero rows stay zero).
    """
    return F.normalize(features.flatten(3).sum(-1), p=2.0, dim=-1)


def normalized_max_pooling(features: Tensor) -> Tensor:
    """Max-pooling ablation of Eq. 3 (Table IV): ``max_ij F_ij`` instead of the sum, then L2 per vertex."""
    return F.normalize(features.flatten(3).amax(-1), p=2.0, dim=-1)


def pooled_sum(f0: Tensor, attention: Tensor) -> Tensor:
    """Eq. 3's sum before its normalisation, ``sum_p F_0[c, p] A[n, p]`` over every position p (d, h, w):
    ``f0 [B, C, d, h, w]``, maps ``[B, N, h, w]`` (the same at every time) or ``[B, N, d, h, w]`` -> ``[B, N, C]``.
    One batched matrix product, without materialising ``[B, N, C, d, h, w]``."""
    a = attention.unsqueeze(2).expand(-1, -1, f0.size(2), -1, -1) if attention.dim() == 4 else attention
    return torch.einsum("bcp,bnp->bnc", f0.flatten(2), a.flatten(2))


def vertices_from_attention(f0: Tensor, attention: Tensor,
                            pooling: Literal["avg", "max"] = "avg") -> Tensor:
    """Eq. 3: vertices ``V [B, N, C]`` from features ``f0 [B, C, d, h, w]`` and maps ``[B, N, h, w]``
    (average pooling: :func:`pooled_sum`, L2-normalised per vertex)."""
    if pooling == "avg":
        return F.normalize(pooled_sum(f0, attention), p=2.0, dim=-1)
    if pooling == "max":
        return normalized_max_pooling(attention_features(f0, attention))
    raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")


def frame_change(f0: Tensor) -> Tensor:
    r"""``|F_0[:, :, t] - F_0[:, :, t-1]|`` for ``t = 1 .. d-1``: ``[B, C, d, h, w] -> [B, C, d-1, h, w]``
    (within the snippet; a one-frame snippet has no change and gives ``d - 1 = 0`` frames)."""
    return (f0[:, :, 1:] - f0[:, :, :-1]).abs()


def motion_pooling(f0: Tensor, attention: Tensor, appearance: Tensor | None = None) -> Tensor:
    r"""The motion half of a vertex (not in the paper): the frame-to-frame change (:func:`frame_change`) pooled
    under the vertex's map as Eq. 3 pools ``F_0``, divided by the norm of Eq. 3's own sum,

    .. math:: M_n = \frac{\sum_{t \ge 1, ij} |F_0[t] - F_0[t-1]|_{ij} \, A_{n,ij}}
                        {\lVert \sum_{t, ij} F_{0,ij}[t] \, A_{n,ij} \rVert_2},

    so that how much the region changes survives (a unit norm of its own would keep only which channels change)
    while the map's and the features' scale cancel. ``f0 [B, C, d, h, w]``, ``attention [B, N, h, w]`` ->
    ``[B, N, C]``, non-negative; a still snippet (or a one-frame one) gives zero rows. ``appearance``: the
    denominator's sum (:func:`pooled_sum`) when the caller has it already, as the STA has for its Eq. 3 half.
    """
    if appearance is None:
        appearance = pooled_sum(f0, attention)
    change = pooled_sum(frame_change(f0), attention)
    return change / appearance.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class ConvBlock3d(nn.Sequential):
    """One STA block: 3x3x3 Conv3d -> BatchNorm3d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True))


class ConvBlock2d(nn.Sequential):
    """One spatial-attention block: 3x3 Conv2d -> BatchNorm2d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class STA(nn.Module):
    r"""SpatioTemporal Attention: ``F_0 [B, C, d, h, w] -> (V [B, N, C], F_A [B, N, h, w])`` (``V [B, N, 2C]``
    with ``motion``).

    Args:
        in_channels (int): C, channels of the backbone feature map.
        heads (int): N, number of attention maps = graph vertices.
        hidden (int, optional): channels between the two blocks (default ``max(N, C // 2)``).
        attention (str): ``'spatiotemporal'`` (two 3D blocks, paper) or ``'spatial'`` (two 2D
            blocks per frame, Table IV). Both average the block output over time.
        pooling (str): ``'avg'`` (Eq. 3) or ``'max'`` (Table IV).
        enabled (bool): False replaces the maps with ones (Table V "graph only"); the vertices
            are then N copies of the normalised pooled ``F_0``.
        motion (bool): not in the paper: each vertex is ``[V_n, M_n]`` (:func:`motion_pooling`), ``2C``
            channels (``out_channels``); False: ``V_n`` alone, C channels.
    """

    def __init__(self, in_channels: int, heads: int, hidden: int | None = None,
                 attention: Literal["spatiotemporal", "spatial"] = "spatiotemporal",
                 pooling: Literal["avg", "max"] = "avg", enabled: bool = True, motion: bool = False) -> None:
        super().__init__()
        if attention not in ("spatiotemporal", "spatial"):
            raise ValueError(f"attention must be 'spatiotemporal' or 'spatial', got {attention!r}")
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        self.in_channels, self.heads = in_channels, heads
        self.hidden = hidden or max(heads, in_channels // 2)
        self.attention, self.pooling, self.enabled, self.motion = attention, pooling, enabled, motion
        if not enabled:
            self.blocks = None
        elif attention == "spatiotemporal":
            self.blocks = nn.Sequential(ConvBlock3d(in_channels, self.hidden), ConvBlock3d(self.hidden, heads))
        else:
            self.blocks = nn.Sequential(ConvBlock2d(in_channels, self.hidden), ConvBlock2d(self.hidden, heads))

    #: an STA pickled before ``motion`` existed (an MLflow model of an older run) unpickles without the attribute
    motion = False

    @property
    def out_channels(self) -> int:
        """Channels of a vertex: C, or 2C with ``motion``."""
        return self.in_channels * (2 if self.motion else 1)

    def attention_maps(self, f0: Tensor) -> Tensor:
        """``F_A``: ``[B, C, d, h, w] -> [B, N, h, w]``."""
        b, c, d, h, w = f0.shape
        if self.blocks is None:
            return f0.new_ones(b, self.heads, h, w)
        if self.attention == "spatiotemporal":
            return self.blocks(f0).mean(2)
        frames = f0.transpose(1, 2).reshape(b * d, c, h, w)            # per-frame 2D attention
        return self.blocks(frames).reshape(b, d, self.heads, h, w).mean(1)

    def forward(self, f0: Tensor) -> tuple[Tensor, Tensor]:
        maps = self.attention_maps(f0)
        if not self.motion:
            return vertices_from_attention(f0, maps, self.pooling), maps
        appearance = pooled_sum(f0, maps)               # Eq. 3's sum: both halves share it with average pooling
        if self.pooling == "avg":
            v = F.normalize(appearance, p=2.0, dim=-1)
        else:
            v = vertices_from_attention(f0, maps, "max")
        return torch.cat([v, motion_pooling(f0, maps, appearance)], dim=-1), maps

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, heads={self.heads}, attention={self.attention!r}, "
                f"pooling={self.pooling!r}, enabled={self.enabled}, motion={self.motion}")
