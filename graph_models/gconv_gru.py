"""Relation cells of the masked relation learner (Sec. III-C, Eq. 8-10, Fig. 4).

A cell maps the vertex sequence ``V [B, T, N, C]`` and one (masked) edge matrix ``E [N, N]``,
shared by every snippet, by the input and the hidden graph convolution and by every stacked
layer, to the last hidden graph ``[B, N, C']`` (``cell.out_channels`` = C').

- :class:`DenseGConvGRU` (``'dense_gru'``): Eq. 8-10 exactly, on dense tensors:
  ``G = E V W_g``, ``H = E V_H W_h``, gates of Eq. 10, ``H^0 = 0``; ``layers`` cells stacked
  (layer l reads the hidden sequence of layer l-1).
- :class:`DenseGCN` (``'gcn'``, image-based variant of RQ3): ``ReLU(E V^t W + b)`` per snippet,
  no GRU, then the mean over snippets.
- :class:`NoGraph` (``'none'``, Table V without graph): the vertices averaged over snippets.
- :class:`TemporalCell` (``'gconv_gru'``, ``'tgcn'``): torch-geometric-temporal's GConvGRU
  (Chebyshev, K = ``cheb_k``, sym. normalisation,
  lambda_max = 2) or TGCN, fed the COMPLETE graph: ``edge_index`` of all N x N
  ordered pairs INCLUDING self loops, ``edge_weight = |E|`` gathered at those pairs (not
  ``dense_to_sparse``: a masked zero stays an edge of weight 0). Edge ``j -> i`` carries
  ``E[i, j]``, so message passing aggregates ``sum_j E_ij x_j = (E X)_i`` as in Eq. 8. Their symmetric normalisation
  takes ``deg^-1/2``, which is NaN for a negative degree; a Gaussian ``E`` has negative row sums,
  hence the absolute value (masking itself still acts on the signed ``E``), plus a floor of 1e-6:
  a vertex whose edges are all masked has degree 0, and ``d deg^-1/2 / d deg`` is infinite there,
  which made the backward pass NaN (the forward pass masks the inf, the gradient does not). ChebConv drops the
  self loops; GCNConv keeps their weights (``add_remaining_self_loops``). B graphs are batched as
  one disconnected graph of B*N nodes. torch_geometric_temporal is imported only through :mod:`graph_models.tgt_compat`, lazily (deferred
  optional import: the default dense cell does not need it).

Adjacency (:func:`adjacency`): ``'raw'`` uses ``E`` as is (paper); ``'normalized'`` uses
``D^-1/2 (E + I) D^-1/2`` with ``D = rowsum(E + I)`` clamped at 1 like PyG's DenseGCNConv
(authors' code).
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense import Linear

from .tgt_compat import import_tgt, tgt_available

__all__ = ["normalized_adjacency", "adjacency", "graph_conv", "gru_update", "DenseGConvGRUCell",
           "DenseGConvGRU", "DenseGCN", "NoGraph", "complete_graph", "batch_complete_graph",
           "TemporalCell", "build_cell", "tgt_available", "nonnegative_edges"]


# --------------------------------------------------------------------------- equations
def normalized_adjacency(edges: Tensor) -> Tensor:
    """Authors'-code adjacency ``D^-1/2 (E + I) D^-1/2``, ``D_ii = max(1, sum_j (E + I)_ij)``.

    Equals PyG ``DenseGCNConv``'s normalisation when ``diag(E) = 0`` (DenseGCNConv SETS the
    diagonal to 1 rather than adding 1).
    """
    a = edges + torch.eye(edges.size(-1), dtype=edges.dtype, device=edges.device)
    d = a.sum(-1).clamp(min=1.0).pow(-0.5)
    return d.unsqueeze(-1) * a * d.unsqueeze(-2)


def adjacency(edges: Tensor, mode: Literal["raw", "normalized"] = "raw") -> Tensor:
    """The matrix the graph convolutions multiply by: ``E`` (``'raw'``) or :func:`normalized_adjacency`."""
    if mode == "raw":
        return edges
    if mode == "normalized":
        return normalized_adjacency(edges)
    raise ValueError(f"adjacency must be 'raw' or 'normalized', got {mode!r}")


def graph_conv(adj: Tensor, x: Tensor, lin: nn.Module) -> Tensor:
    """Eq. 8 / 9: ``GConv(X, E) = E X W``, computed as ``E (X W)``.

    Args:
        adj: ``[N, N]`` (or ``[B, N, N]``); x: ``[B, N, F]``; lin: ``X -> X W`` (no bias).
    """
    return adj @ lin(x)


def gru_update(g: Tensor, hc: Tensor, h: Tensor, b_r: Tensor, b_z: Tensor, b_h: Tensor) -> Tensor:
    """Eq. 10 with ``G = (G_r, G_z, G_h)`` and ``H = (H_r, H_z, H_h)`` split along the last axis::

        r   = sigmoid(G_r + H_r + b_r)
        z   = sigmoid(G_z + H_z + b_z)
        H~  = tanh(G_h + r * H_h + b_h)        (r multiplies H_h after the convolution)
        H'  = z * H + (1 - z) * H~

    Args:
        g: ``[..., 3C']`` input graph convolution; hc: ``[..., 3C']`` hidden graph convolution;
        h: ``[..., C']`` previous hidden vertices.
    """
    g_r, g_z, g_h = g.chunk(3, dim=-1)
    h_r, h_z, h_h = hc.chunk(3, dim=-1)
    r = torch.sigmoid(g_r + h_r + b_r)
    z = torch.sigmoid(g_z + h_z + b_z)
    h_tilde = torch.tanh(g_h + r * h_h + b_h)
    return z * h + (1 - z) * h_tilde


# --------------------------------------------------------------------------- dense cells
class DenseGConvGRUCell(nn.Module):
    r"""One step of the graph-convolutional GRU, Eq. 8-10.

    .. math::
        G = E V W_g,\quad H_c = E H W_h,\quad H' = \mathrm{GRU}(G, H_c, H)\ \text{(Eq. 10)}

    Args:
        in_channels (int): C. out_channels (int): C'.

    Shapes: x ``[B, N, C]``, adj ``[N, N]``, h ``[B, N, C']`` (None: zeros) -> ``[B, N, C']``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin_g = Linear(in_channels, 3 * out_channels, bias=False, weight_initializer="glorot")  # W_g
        self.lin_h = Linear(out_channels, 3 * out_channels, bias=False, weight_initializer="glorot")  # W_h
        self.bias = nn.Parameter(torch.zeros(3 * out_channels))                                       # b_r, b_z, b_h
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_g.reset_parameters()
        self.lin_h.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, adj: Tensor, h: Optional[Tensor] = None) -> Tensor:
        if h is None:
            h = x.new_zeros(*x.shape[:-1], self.out_channels)
        g = graph_conv(adj, x, self.lin_g)
        hc = graph_conv(adj, h, self.lin_h)
        b_r, b_z, b_h = self.bias.chunk(3)
        return gru_update(g, hc, h, b_r, b_z, b_h)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"


class DenseGConvGRU(nn.Module):
    """``layers`` stacked :class:`DenseGConvGRUCell` run over the T snippets (``H^0 = 0``).

    forward(vertices ``[B, T, N, C]``, adj ``[N, N]``) -> last hidden of the last layer ``[B, N, C']``.
    """

    def __init__(self, in_channels: int, out_channels: int, layers: int = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.cells = nn.ModuleList(
            DenseGConvGRUCell(in_channels if i == 0 else out_channels, out_channels) for i in range(layers))

    def forward(self, vertices: Tensor, adj: Tensor) -> Tensor:
        seq = list(vertices.unbind(1))
        for cell in self.cells:
            h = None
            out = []
            for x in seq:
                h = cell(x, adj, h)
                out.append(h)
            seq = out
        return seq[-1]


class DenseGCN(nn.Module):
    """Graph convolution without GRU (image-based variant, RQ3): ``layers`` times
    ``X <- ReLU(E X W + b)`` on every snippet, then the mean over snippets -> ``[B, N, C']``."""

    def __init__(self, in_channels: int, out_channels: int, layers: int = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.lins = nn.ModuleList(
            Linear(in_channels if i == 0 else out_channels, out_channels, bias=True,
                   weight_initializer="glorot", bias_initializer="zeros") for i in range(layers))

    def forward(self, vertices: Tensor, adj: Tensor) -> Tensor:
        x = vertices
        for lin in self.lins:
            x = torch.relu(graph_conv(adj, x, lin))
        return x.mean(1)


class NoGraph(nn.Module):
    """Graph off (Table V): vertices averaged over snippets, ``[B, T, N, C] -> [B, N, C]``;
    the adjacency is ignored."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out_channels = in_channels

    def forward(self, vertices: Tensor, adj: Optional[Tensor] = None) -> Tensor:
        return vertices.mean(1)


# --------------------------------------------------------------------------- torch-geometric-temporal cells
def nonnegative_edges(edges: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Edge weights for the torch-geometric-temporal cells: ``softplus(E) * eta``.

    softplus is increasing, so a larger E is a stronger edge and a kept negative entry stays weaker than
    a kept positive one (taking ``|E|`` would flip it into a strong edge); masked entries (``eta = 0``)
    are exactly 0, and every kept entry keeps a gradient."""
    w = torch.nn.functional.softplus(edges)
    return w if mask is None else w * mask


def complete_graph(n: int, self_loops: bool = True, device=None) -> Tensor:
    """``edge_index [2, n*n]`` (``n*(n-1)`` without self loops) of all ordered pairs, row 0 the
    source j, row 1 the target i; edge ``k = i*n + j`` (with self loops) is ``j -> i`` and carries ``E[i, j]``."""
    idx = torch.arange(n, device=device)
    dst, src = idx.repeat_interleave(n), idx.repeat(n)
    if not self_loops:
        keep = src != dst
        src, dst = src[keep], dst[keep]
    return torch.stack([src, dst])


def batch_complete_graph(edges: Tensor, batch: int, self_loops: bool = True) -> tuple[Tensor, Tensor]:
    """B copies of the complete graph over ``edges [N, N]`` as one disconnected graph.

    Returns ``edge_index [2, B*M]`` (node ids offset by N per graph) and ``edge_weight [B*M]``,
    ``edge_weight[k] = edges[target_k, source_k]`` gathered (differentiable w.r.t. ``edges``)."""
    n = edges.size(0)
    ei = complete_graph(n, self_loops, edges.device)
    w = edges[ei[1], ei[0]]
    offs = (torch.arange(batch, device=edges.device) * n).repeat_interleave(ei.size(1))
    return ei.repeat(1, batch) + offs, w.repeat(batch)


class TemporalCell(nn.Module):
    """torch-geometric-temporal recurrent cells on the complete graph (see module docstring).

    Args:
        kind: ``'gconv_gru'`` (GConvGRU, Chebyshev order ``cheb_k`` >= 2; K = 1 ignores the graph)
            or ``'tgcn'`` (TGCN, GCNConv gates).
        in_channels, out_channels, layers, cheb_k.

    forward(vertices ``[B, T, N, C]``, edges ``[N, N]``) -> ``[B, N, C']``.
    """

    def __init__(self, kind: Literal["gconv_gru", "tgcn"], in_channels: int, out_channels: int,
                 layers: int = 1, cheb_k: int = 2) -> None:
        super().__init__()
        try:
            recurrent = import_tgt().nn.recurrent
        except Exception as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"relation.cell={kind!r} needs torch-geometric-temporal "
                              f"(pip install torch-geometric-temporal==0.56.2): {exc}") from exc
        TGCN, GConvGRU = recurrent.TGCN, recurrent.GConvGRU
        if kind == "gconv_gru" and cheb_k < 2:
            raise ValueError("relation.cheb_k must be >= 2 for gconv_gru: with K = 1 the graph is ignored")
        self.kind, self.out_channels = kind, out_channels
        self.weight_floor = 1e-6
        cells = []
        for i in range(layers):
            cin = in_channels if i == 0 else out_channels
            cells.append(GConvGRU(cin, out_channels, K=cheb_k) if kind == "gconv_gru"
                         else TGCN(cin, out_channels))
        self.cells = nn.ModuleList(cells)

    def forward(self, vertices: Tensor, edges: Tensor) -> Tensor:
        """``edges``: NON-NEGATIVE weights ``[N, N]`` (ChebConv's and GCNConv's normalisations need them),
        e.g. :func:`nonnegative_edges` of the learnable E; a small floor keeps every degree positive."""
        b, t, n, _ = vertices.shape
        if bool((edges < 0).any()):
            raise ValueError("torch-geometric-temporal cells need non-negative edge weights; "
                             "pass nonnegative_edges(E, mask) (softplus keeps the order of E, masked edges 0)")
        edge_index, edge_weight = batch_complete_graph(edges + self.weight_floor, b, self_loops=True)
        seq = [x.reshape(b * n, -1) for x in vertices.unbind(1)]
        for cell in self.cells:
            h = seq[0].new_zeros(b * n, self.out_channels)
            out = []
            for x in seq:
                # GConvGRU: ChebConv's default lambda_max = 2 * max(L) = 2 for weights >= 0
                h = cell(x, edge_index, edge_weight, h)
                out.append(h)
            seq = out
        return seq[-1].reshape(b, n, self.out_channels)


def build_cell(cell: str, in_channels: int, hidden: int, layers: int = 1, cheb_k: int = 2) -> nn.Module:
    """The relation cell named by ``RelationParams.cell``."""
    if cell == "dense_gru":
        return DenseGConvGRU(in_channels, hidden, layers)
    if cell == "gcn":
        return DenseGCN(in_channels, hidden, layers)
    if cell == "none":
        return NoGraph(in_channels)
    if cell in ("gconv_gru", "tgcn"):
        return TemporalCell(cell, in_channels, hidden, layers, cheb_k)
    raise ValueError(f"unknown relation cell {cell!r} (dense_gru, gconv_gru, tgcn, gcn, none)")
