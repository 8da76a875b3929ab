"""graph_models/tgt_compat.py: torch-geometric-temporal without the compiled torch-sparse."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from graph_models.gconv_gru import build_cell, nonnegative_edges
from graph_models.masking import edge_mask
from graph_models.tgt_compat import EVOLVEGCNO_MESSAGE, import_tgt

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env_path = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    return subprocess.run([sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": ":".join(env_path), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("kind", ["gconv_gru", "tgcn"])
def test_the_offered_cells_run_forward_and_backward_through_the_compat_import(kind):
    tgt = import_tgt()
    assert hasattr(tgt.nn.recurrent, "GConvGRU") and hasattr(tgt.nn.recurrent, "TGCN")
    torch.manual_seed(0)
    cell = build_cell(kind, 3, 4)
    e = torch.randn(5, 5, requires_grad=True)
    out = cell(torch.randn(2, 3, 5, 3), nonnegative_edges(e, edge_mask(e, 0.3, "random")))
    out.sum().backward()
    assert out.shape == (2, 5, 4) and torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0


def test_without_torch_sparse_evolvegcno_refuses_and_no_stand_in_is_left_behind():
    res = _run("""
        import sys, importlib.util
        assert importlib.util.find_spec("torch_sparse") is None, "this test needs torch_sparse absent"
        from graph_models.tgt_compat import import_tgt
        tgt = import_tgt()
        assert "torch_sparse" not in sys.modules
        try:
            tgt.nn.recurrent.EvolveGCNO(4)
        except ImportError as exc:
            print("REFUSED:", exc)
    """)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"REFUSED: {EVOLVEGCNO_MESSAGE}" in res.stdout


def test_with_a_real_torch_sparse_nothing_is_replaced(tmp_path):
    """A package named torch_sparse on the path (standing in for the compiled one) is used as it is."""
    pkg = tmp_path / "torch_sparse"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("class SparseTensor:\n    REAL = True\n")
    res = _run("""
        import torch_sparse
        from graph_models.tgt_compat import import_tgt
        tgt = import_tgt()
        ev = tgt.nn.recurrent.evolvegcno
        assert ev.SparseTensor is torch_sparse.SparseTensor and ev.SparseTensor.REAL
        assert ev.EvolveGCNO.__init__.__qualname__.startswith("EvolveGCNO"), "EvolveGCNO must stay untouched"
        print("OK")
    """, extra_path=tmp_path)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]
