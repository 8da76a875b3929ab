"""torch-geometric-temporal without the compiled torch-sparse: the one place this project imports it.

torch-geometric-temporal 0.56.2 imports ``torch_sparse`` in exactly one file,
``nn/recurrent/evolvegcno.py`` (``from torch_sparse import SparseTensor``, for the EvolveGCNO cell only),
and that import runs on ``import torch_geometric_temporal``. torch-scatter is imported nowhere. Neither
has a wheel for the torch this project pins, and compiling them costs 25-50 minutes on 2 cores.

PyG already defines a placeholder ``torch_geometric.typing.SparseTensor`` for installs without
torch-sparse (constructing it raises ImportError). When, and only when, ``torch_sparse`` is not
installed, :func:`import_tgt` makes that placeholder importable as ``torch_sparse.SparseTensor`` for the
duration of the import, then removes the stand-in from ``sys.modules`` again (so no other code mistakes
it for the real package) and makes ``EvolveGCNO`` refuse construction with a clear message. With a real
torch_sparse installed nothing is replaced.

The cells this project offers (GConvGRU, TGCN) never touch SparseTensor.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

from torch_geometric.typing import SparseTensor  # PyG's placeholder when torch-sparse is absent

__all__ = ["import_tgt", "tgt_available", "PLACEHOLDER_ATTR", "EVOLVEGCNO_MESSAGE"]

PLACEHOLDER_ATTR = "__mrl_placeholder__"
EVOLVEGCNO_MESSAGE = ("EvolveGCNO needs the compiled torch-sparse package, which this project does not install "
                      "(no wheel for torch 2.14; it compiles for ~30 min): pip install --no-build-isolation "
                      "torch-sparse==0.6.18, or use relation.cell gconv_gru / tgcn / dense_gru")

_module: Any = None


def _real_torch_sparse_installed() -> bool:
    mod = sys.modules.get("torch_sparse")
    if mod is not None:
        return not getattr(mod, PLACEHOLDER_ATTR, False)
    return importlib.util.find_spec("torch_sparse") is not None


def _refuse_evolvegcno(tgt) -> None:
    cls = tgt.nn.recurrent.evolvegcno.EvolveGCNO

    def __init__(self, *args, **kwargs):
        raise ImportError(EVOLVEGCNO_MESSAGE)

    cls.__init__ = __init__


def import_tgt():
    """``import torch_geometric_temporal`` (cached), with PyG's SparseTensor placeholder standing in for
    torch_sparse only when the real package is absent."""
    global _module
    if _module is not None:
        return _module
    if _real_torch_sparse_installed():
        _module = importlib.import_module("torch_geometric_temporal")
        return _module
    stand_in = types.ModuleType("torch_sparse")
    stand_in.SparseTensor = SparseTensor
    setattr(stand_in, PLACEHOLDER_ATTR, True)
    sys.modules["torch_sparse"] = stand_in
    try:
        tgt = importlib.import_module("torch_geometric_temporal")
    finally:
        if sys.modules.get("torch_sparse") is stand_in:
            del sys.modules["torch_sparse"]
    _refuse_evolvegcno(tgt)
    _module = tgt
    return tgt


def tgt_available() -> bool:
    """Whether torch-geometric-temporal can be imported (through :func:`import_tgt`)."""
    try:
        import_tgt()
    except Exception:
        return False
    return True
