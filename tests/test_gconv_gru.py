"""Eq. 8-10 and the relation cells (graph_models/gconv_gru.py).

References are written out with plain matrix products. The comparison with torch-geometric-temporal
uses the one configuration where its GConvGRU (Seo et al.) and Eq. 8-10 compute the same update:

* GConvGRU with K = 2 and lambda_max = 2 applies ``ChebConv(X) = X W_0 + L~ X W_1 + b`` with
  ``L~ = 2 L / lambda_max - I = -D^-1/2 A D^-1/2`` (self loops removed, A symmetric, >= 0);
* set every ``W_0`` to 0 and both weights of the candidate's hidden conv ``conv_h_h`` to 0;
  then ``conv_h_h(H * R) = b`` and the reset gate no longer matters, so GConvGRU reduces to
  Eq. 10 with ``E := -D^-1/2 A D^-1/2``, ``W_g = [W1_xr; W1_xz; W1_xh]``, ``W_h = [W1_hr; W1_hz; 0]``
  and ``b = b_x + b_h`` per gate. (Eq. 10 multiplies r AFTER the hidden convolution, GConvGRU
  before, which is why that term has to vanish.)
"""
import pytest
import torch
from torch_geometric.nn.dense import DenseGCNConv

from graph_models.gconv_gru import (DenseGCN, DenseGConvGRU, DenseGConvGRUCell, NoGraph, adjacency,
                                    batch_complete_graph, build_cell, complete_graph, graph_conv,
                                    gru_update, nonnegative_edges, normalized_adjacency, tgt_available)
from graph_models.masking import edge_mask, mask_edges

torch.set_num_threads(1)
needs_tgt = pytest.mark.skipif(not tgt_available(),
                               reason="torch_geometric_temporal is not importable (torch-scatter/torch-sparse missing)")


def _cell_reference(v, e, h, wg, wh, b):
    """Eq. 8-10 written out: wg [C, 3C'], wh [C', 3C'], b [3C']."""
    c = h.size(-1)
    g = e @ v @ wg                                   # Eq. 8
    hh = e @ h @ wh                                  # Eq. 9
    r = torch.sigmoid(g[..., :c] + hh[..., :c] + b[:c])
    z = torch.sigmoid(g[..., c:2 * c] + hh[..., c:2 * c] + b[c:2 * c])
    h_tilde = torch.tanh(g[..., 2 * c:] + r * hh[..., 2 * c:] + b[2 * c:])
    return z * h + (1 - z) * h_tilde                 # Eq. 10


def test_gru_update_by_hand():
    # one vertex, C' = 1: G = (0, 0, 1), H = (0, 0, 2), h = 0.5, biases 0
    # r = z = 0.5;  H~ = tanh(1 + 0.5 * 2) = tanh(2);  H' = 0.25 + 0.5 tanh(2)
    g, hc, h = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 2.0]), torch.tensor([0.5])
    out = gru_update(g, hc, h, torch.zeros(1), torch.zeros(1), torch.zeros(1))
    assert torch.isclose(out, 0.25 + 0.5 * torch.tanh(torch.tensor(2.0))).all()


def test_graph_conv_is_E_V_W():
    e, v = torch.randn(4, 4), torch.randn(2, 4, 3)
    lin = torch.nn.Linear(3, 5, bias=False)
    assert torch.allclose(graph_conv(e, v, lin), e @ v @ lin.weight.T, atol=1e-6)
    assert torch.allclose(graph_conv(torch.eye(4), v, lin), lin(v), atol=1e-6)


def test_cell_step_equals_equations():
    torch.manual_seed(0)
    cell = DenseGConvGRUCell(3, 2)
    torch.nn.init.normal_(cell.bias)
    e, v, h = torch.randn(4, 4), torch.randn(2, 4, 3), torch.randn(2, 4, 2)
    ref = _cell_reference(v, e, h, cell.lin_g.weight.T, cell.lin_h.weight.T, cell.bias)
    assert torch.allclose(cell(v, e, h), ref, atol=1e-6)
    # H^0 = 0
    ref0 = _cell_reference(v, e, torch.zeros(2, 4, 2), cell.lin_g.weight.T, cell.lin_h.weight.T, cell.bias)
    assert torch.allclose(cell(v, e), ref0, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_sequence_and_stacking_equal_loop(layers):
    torch.manual_seed(1)
    gru = DenseGConvGRU(3, 2, layers)
    e, seq = torch.randn(4, 4), torch.randn(2, 5, 4, 3)
    xs = list(seq.unbind(1))
    for cell in gru.cells:
        h, out = torch.zeros(2, 4, 2), []
        for x in xs:
            h = _cell_reference(x, e, h, cell.lin_g.weight.T, cell.lin_h.weight.T, cell.bias)
            out.append(h)
        xs = out
    assert torch.allclose(gru(seq, e), xs[-1], atol=1e-6)


def test_normalized_adjacency_matches_dense_gcn_conv():
    # DenseGCNConv SETS diag(A) = 1; with diag(E) = 0 that equals E + I, so both normalise alike
    torch.manual_seed(2)
    e = torch.rand(5, 5)
    e.fill_diagonal_(0.0)
    conv = DenseGCNConv(3, 4)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 5, 3)
    ours = normalized_adjacency(e) @ conv.lin(x) + conv.bias
    assert torch.allclose(conv(x, e), ours, atol=1e-5)
    # and by hand: D^-1/2 (E + I) D^-1/2
    a = e + torch.eye(5)
    d = a.sum(1).pow(-0.5)
    assert torch.allclose(normalized_adjacency(e), d[:, None] * a * d[None, :], atol=1e-6)
    assert torch.equal(adjacency(e, "raw"), e)
    with pytest.raises(ValueError):
        adjacency(e, "laplacian")


def test_gradient_reaches_E_and_masked_entries_get_none():
    torch.manual_seed(3)
    gru = DenseGConvGRU(3, 2)
    e = torch.randn(4, 4, requires_grad=True)
    masked = mask_edges(e, 0.5, "minimal")
    gru(torch.randn(2, 3, 4, 3), masked).pow(2).sum().backward()
    eta = masked.detach() != 0
    assert (e.grad[~eta] == 0).all() and (e.grad[eta] != 0).all()


def test_gcn_and_none_cells():
    torch.manual_seed(4)
    gcn = DenseGCN(3, 2)
    e, seq = torch.randn(4, 4), torch.randn(2, 3, 4, 3)
    lin = gcn.lins[0]
    ref = torch.stack([torch.relu(e @ seq[:, t] @ lin.weight.T + lin.bias) for t in range(3)], 1).mean(1)
    assert torch.allclose(gcn(seq, e), ref, atol=1e-6)
    assert torch.equal(NoGraph(3)(seq, e), seq.mean(1)) and NoGraph(3).out_channels == 3
    with pytest.raises(ValueError):
        build_cell("lstm", 3, 2)


def test_complete_graph_layout():
    ei = complete_graph(3)
    assert ei.shape == (2, 9) and complete_graph(3, self_loops=False).shape == (2, 6)
    e = torch.arange(9.0).view(3, 3).requires_grad_(True)
    index, weight = batch_complete_graph(e, batch=2)
    assert index.shape == (2, 18) and int(index.max()) == 5
    for k in range(18):
        src, dst = int(index[0, k]) % 3, int(index[1, k]) % 3
        assert weight[k] == e[dst, src]                                 # edge j -> i carries E[i, j]
        assert (int(index[0, k]) // 3) == (int(index[1, k]) // 3)       # graphs stay disconnected
    weight.sum().backward()
    assert torch.equal(e.grad, torch.full((3, 3), 2.0))                 # each entry used once per graph


@needs_tgt
def test_dense_cell_equals_tgt_gconv_gru_in_reducing_case():
    from graph_models.gconv_gru import TemporalCell
    torch.manual_seed(5)
    n, c, cp, b, t = 5, 3, 4, 2, 3
    a = torch.rand(n, n)
    a = (a + a.T) / 2
    a.fill_diagonal_(0.0)
    tgt = TemporalCell("gconv_gru", c, cp, cheb_k=2)
    gc = tgt.cells[0]
    with torch.no_grad():
        for name in ["conv_x_z", "conv_h_z", "conv_x_r", "conv_h_r", "conv_x_h", "conv_h_h"]:
            conv = getattr(gc, name)
            conv.lins[0].weight.zero_()
            torch.nn.init.normal_(conv.bias)
        gc.conv_h_h.lins[1].weight.zero_()
    dense = DenseGConvGRU(c, cp)
    cell = dense.cells[0]
    with torch.no_grad():
        cell.lin_g.weight.copy_(torch.cat([gc.conv_x_r.lins[1].weight, gc.conv_x_z.lins[1].weight,
                                           gc.conv_x_h.lins[1].weight]))
        cell.lin_h.weight.copy_(torch.cat([gc.conv_h_r.lins[1].weight, gc.conv_h_z.lins[1].weight,
                                           torch.zeros(cp, cp)]))
        cell.bias.copy_(torch.cat([gc.conv_x_r.bias + gc.conv_h_r.bias, gc.conv_x_z.bias + gc.conv_h_z.bias,
                                   gc.conv_x_h.bias + gc.conv_h_h.bias]))
    w = a + tgt.weight_floor                                           # the weights tgt actually sees
    w.fill_diagonal_(0.0)                                              # (ChebConv drops self loops)
    d = w.sum(1).pow(-0.5)
    scaled_laplacian = -(d[:, None] * w * d[None, :])
    v = torch.randn(b, t, n, c)
    assert torch.allclose(tgt(v, a), dense(v, scaled_laplacian), atol=1e-6)


@needs_tgt
@pytest.mark.parametrize("kind", ["gconv_gru", "tgcn"])
def test_tgt_cells_forward_backward_reach_E(kind):
    torch.manual_seed(6)
    cell = build_cell(kind, 3, 4, layers=2, cheb_k=2)
    e = torch.randn(5, 5, requires_grad=True)
    out = cell(torch.randn(2, 3, 5, 3), nonnegative_edges(e, edge_mask(e, 0.3, "minimal")))
    assert out.shape == (2, 5, 4) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert e.grad is not None and torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0


@needs_tgt
def test_gconv_gru_rejects_k1():
    with pytest.raises(ValueError):
        build_cell("gconv_gru", 3, 4, cheb_k=1)


def test_cheb_conv_k2_on_complete_graph_is_dense_scaled_laplacian():
    """The building block of the tgt comparison, checkable without torch-geometric-temporal:
    PyG ChebConv (K=2, sym) on ``batch_complete_graph`` = ``X W_0 - D^-1/2 A D^-1/2 X W_1 + b``."""
    from torch_geometric.nn import ChebConv
    torch.manual_seed(8)
    n, b = 5, 3
    a = torch.rand(n, n)
    a = (a + a.T) / 2
    a.fill_diagonal_(0.7)                                              # self loops are dropped by ChebConv
    conv = ChebConv(4, 2, K=2)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(b, n, 4)
    ei, w = batch_complete_graph(a, b)
    out = conv(x.reshape(b * n, 4), ei, w).reshape(b, n, 2)
    off = a - torch.diag(torch.diagonal(a))
    d = off.sum(1).pow(-0.5)
    ref = x @ conv.lins[0].weight.T - (d[:, None] * off * d[None, :]) @ x @ conv.lins[1].weight.T + conv.bias
    assert torch.allclose(out, ref, atol=1e-5)


@needs_tgt
@pytest.mark.parametrize("kind", ["gconv_gru", "tgcn"])
def test_tgt_cells_finite_when_a_vertex_loses_all_edges(kind):
    """Regression: a fully masked row gave degree 0 and NaN gradients in ChebConv/GCNConv."""
    torch.manual_seed(9)
    cell = build_cell(kind, 3, 4)
    e = torch.rand(4, 4) + 0.1
    e[2] = -1.0                                                        # row 2 is the minimum -> masked
    e.requires_grad_(True)
    masked = nonnegative_edges(e, edge_mask(e, 0.5, "minimal"))
    assert (masked[2] == 0).all()
    cell(torch.randn(2, 3, 4, 3), masked).pow(2).sum().backward()
    assert torch.isfinite(e.grad).all() and (e.grad[2] == 0).all() and e.grad.abs().sum() > 0


@needs_tgt
def test_tgt_cells_refuse_negative_weights_and_keep_the_order_of_E():
    """Regression: the tgt cells took |E|, so a kept edge of -3 became a strong edge of weight 3."""
    cell = build_cell("tgcn", 3, 4)
    e = torch.tensor([[0.0, -3.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match="non-negative"):
        cell(torch.randn(1, 2, 2, 3), e)
    w = nonnegative_edges(e, torch.ones(2, 2))
    assert (w > 0).all() and w[0, 1] < w[0, 0] < w[1, 0]                # softplus is increasing: order kept
    assert nonnegative_edges(e, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))[0, 1] == 0  # masked stays 0
