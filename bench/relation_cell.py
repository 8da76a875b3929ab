"""Dense relation cell (Eq. 8-10) vs torch-geometric-temporal GConvGRU (K = 2) on the same graph.

Both run forward + backward over T snippets of a batch of complete N-vertex graphs with one shared
learnable E. The agreement check uses the configuration where both compute the same update
(see tests/test_gconv_gru.py: Chebyshev W_0 = 0, candidate hidden conv = 0, E := -D^-1/2 A D^-1/2).

    python bench/relation_cell.py [--batch 32 --nodes 12 --in 512 --hidden 128 --steps 5 --threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph_models.gconv_gru import DenseGConvGRU, TemporalCell, nonnegative_edges, tgt_available  # noqa: E402


def time_fwd_bwd(cell, v, edges, repeats: int, warmup: int = 2, edge_fn=lambda e: e) -> list[float]:
    """Seconds of forward + backward per repeat; ``edge_fn`` maps the learnable E to the cell's edges."""
    out = []
    for i in range(warmup + repeats):
        cell.zero_grad(set_to_none=True)
        edges.grad = None
        t0 = time.perf_counter()
        cell(v, edge_fn(edges)).square().mean().backward()
        if v.is_cuda:
            torch.cuda.synchronize(v.device)
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    assert edges.grad is not None and edges.grad.abs().sum() > 0, "no gradient reached E"
    return out


def reduce_to_same(tgt: TemporalCell, dense: DenseGConvGRU) -> None:
    """Set weights so that GConvGRU (K=2, lambda_max=2) and Eq. 8-10 compute the same update."""
    gc, cell = tgt.cells[0], dense.cells[0]
    with torch.no_grad():
        for name in ["conv_x_z", "conv_h_z", "conv_x_r", "conv_h_r", "conv_x_h", "conv_h_h"]:
            getattr(gc, name).lins[0].weight.zero_()
        gc.conv_h_h.lins[1].weight.zero_()
        cp = cell.out_channels
        cell.lin_g.weight.copy_(torch.cat([gc.conv_x_r.lins[1].weight, gc.conv_x_z.lins[1].weight,
                                           gc.conv_x_h.lins[1].weight]))
        cell.lin_h.weight.copy_(torch.cat([gc.conv_h_r.lins[1].weight, gc.conv_h_z.lins[1].weight,
                                           torch.zeros(cp, cp, device=cell.lin_h.weight.device)]))
        cell.bias.copy_(torch.cat([gc.conv_x_r.bias + gc.conv_h_r.bias, gc.conv_x_z.bias + gc.conv_h_z.bias,
                                   gc.conv_x_h.bias + gc.conv_h_h.bias]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--in", dest="in_dim", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    if not tgt_available():
        print("torch_geometric_temporal is not importable; install torch-geometric-temporal==0.56.2")
        return 2
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    n = a.nodes
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available")
        return 2
    adj = torch.rand(n, n)
    adj = (adj + adj.T) / 2
    adj.fill_diagonal_(0.0)
    v = torch.randn(a.batch, a.steps, n, a.in_dim, device=dev)
    dense = DenseGConvGRU(a.in_dim, a.hidden).to(dev)
    tgt = TemporalCell("gconv_gru", a.in_dim, a.hidden, cheb_k=2).to(dev)
    w = adj + tgt.weight_floor                                  # the weights tgt sees, self loops dropped
    w.fill_diagonal_(0.0)
    d = w.sum(1).pow(-0.5)
    lap = -(d[:, None] * w * d[None, :])                        # GConvGRU's scaled Laplacian, lambda_max = 2

    reduce_to_same(tgt, dense)
    with torch.no_grad():
        diff = (tgt(v, adj.to(dev)) - dense(v, lap.to(dev))).abs().max().item()
    ok = diff < 1e-4
    print(f"agreement (reducing configuration): max |tgt - dense| = {diff:.2e} -> {'OK' if ok else 'MISMATCH'}")

    e_dense = torch.randn(n, n, device=dev, requires_grad=True)
    e_tgt = torch.randn(n, n, device=dev, requires_grad=True)
    td = time_fwd_bwd(dense, v, e_dense, a.repeats)
    tt = time_fwd_bwd(tgt, v, e_tgt, a.repeats, edge_fn=nonnegative_edges)  # tgt needs weights >= 0
    md, mt = statistics.median(td), statistics.median(tt)
    print(f"config: batch={a.batch} N={n} in={a.in_dim} hidden={a.hidden} T={a.steps} "
          f"threads={torch.get_num_threads()} device={dev} torch={torch.__version__}")
    print(f"dense Eq. 8-10 cell     : {md * 1e3:8.1f} ms  (median of {a.repeats}, fwd+bwd)")
    print(f"tgt GConvGRU (K=2)      : {mt * 1e3:8.1f} ms")
    print(f"ratio tgt / dense       : {mt / md:8.2f}x  (target >= 3x)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
