"""Meso-4 (Afchar et al., "MesoNet: a Compact Facial Video Forgery Detection Network", WIFS 2018) in PyTorch,
with the authors' published Keras weights read from their HDF5 files by h5py.

The network (the authors' ``classifiers.py``; input a 256 x 256 RGB face scaled to [0, 1]):

=====  ===============================================================  ==================
block  layers                                                           output (H x W x C)
=====  ===============================================================  ==================
1      conv 8 @ 3x3 'same' + ReLU -> BatchNorm -> max-pool 2            128 x 128 x 8
2      conv 8 @ 5x5 'same' + ReLU -> BatchNorm -> max-pool 2            64 x 64 x 8
3      conv 16 @ 5x5 'same' + ReLU -> BatchNorm -> max-pool 2           32 x 32 x 16
4      conv 16 @ 5x5 'same' + ReLU -> BatchNorm -> max-pool 4           8 x 8 x 16
head   flatten (Keras order H, W, C: 1024) -> dropout 0.5 -> dense 16 -> LeakyReLU 0.1 -> dropout 0.5
       -> dense 1 -> sigmoid = P(real)
=====  ===============================================================  ==================

Keras' BatchNormalization at inference is ``gamma * (x - moving_mean) / sqrt(moving_variance + 1e-3) + beta``
(its default epsilon 1e-3, not torch's 1e-5). A Keras kernel is stored H x W x in x out (conv) and in x out
(dense); torch wants out x in x H x W and out x in. Keras flattens channels last, so the flatten here permutes
N x C x H x W to N x H x W x C first, or the first dense layer would read its 1024 inputs in the wrong order.

The authors trained with ``flow_from_directory`` (classes sorted: deepfake = 0, real = 1), so the sigmoid is
the probability of REAL: :func:`fake_scores` returns ``1 - output``, the project's convention (higher = fake).

Weights: :data:`WEIGHTS` names the vendored files (``peer_models/weights/mesonet/``, Apache-2.0, see the README
there) with their SHA-256; :func:`load_meso4` refuses a file whose bytes differ.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch
from torch import nn

from pipeline.runtime import sha256_file

__all__ = ["WEIGHTS", "WEIGHTS_DIR", "INPUT_SIZE", "WeightsError", "Meso4", "read_keras_weights",
           "load_keras_weights", "load_meso4", "fake_scores"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "mesonet"
#: the vendored weight files and their SHA-256 (``peer_models/weights/mesonet/README.md``)
WEIGHTS = {
    "Meso4_DF": ("Meso4_DF.h5", "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5"),
    "Meso4_F2F": ("Meso4_F2F.h5", "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7"),
}
INPUT_SIZE = 256
BN_EPS = 1e-3          # Keras' BatchNormalization default
LEAKY_SLOPE = 0.1
_BLOCKS = ((3, 8, 3, 2), (8, 8, 5, 2), (8, 16, 5, 2), (16, 16, 5, 4))  # in, out, kernel, pool


class WeightsError(RuntimeError):
    """A weight file that is missing, changed (SHA-256) or not laid out as Meso-4's."""


class Meso4(nn.Module):
    """Meso-4 (see the module docstring). ``forward(x)``: ``x`` float ``[N, 3, 256, 256]`` in [0, 1] ->
    the sigmoid output ``[N]`` = P(real). :meth:`layers` returns every layer's output (for the layer-by-layer
    check against Keras' maths). Dropout is identity in ``eval()`` mode, as in Keras' inference."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, padding=k // 2) for i, o, k, _ in _BLOCKS)
        self.norms = nn.ModuleList(nn.BatchNorm2d(o, eps=BN_EPS) for _, o, _, _ in _BLOCKS)
        self.pools = nn.ModuleList(nn.MaxPool2d(p) for *_, p in _BLOCKS)
        self.dense1 = nn.Linear(1024, 16)
        self.dense2 = nn.Linear(16, 1)
        self.dropout = nn.Dropout(0.5)

    def layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named outputs in order: ``conv{i}`` (after ReLU), ``bn{i}``, ``pool{i}`` (i = 1..4, N x C x H x W),
        ``flatten`` (N x 1024, Keras order), ``dense1`` (before LeakyReLU), ``leaky``, ``dense2`` (logit),
        ``sigmoid`` (P(real))."""
        out: dict[str, torch.Tensor] = {}
        for i, (conv, norm, pool) in enumerate(zip(self.convs, self.norms, self.pools), start=1):
            x = out[f"conv{i}"] = torch.relu(conv(x))
            x = out[f"bn{i}"] = norm(x)
            x = out[f"pool{i}"] = pool(x)
        x = out["flatten"] = x.permute(0, 2, 3, 1).flatten(1)
        x = out["dense1"] = self.dense1(self.dropout(x))
        x = out["leaky"] = nn.functional.leaky_relu(x, LEAKY_SLOPE)
        x = out["dense2"] = self.dense2(self.dropout(x)).squeeze(1)
        out["sigmoid"] = torch.sigmoid(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)["sigmoid"]


def read_keras_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The weights of a Keras 2 HDF5 file (``save_weights`` or ``save`` layout) as ``layer name -> arrays`` in
    the file's layer order and each layer's ``weight_names`` order (layers without weights left out)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            g = f["model_weights"] if "model_weights" in f else f
            out = {}
            for name in (n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs["layer_names"]):
                names = [w.decode() if isinstance(w, bytes) else str(w) for w in g[name].attrs["weight_names"]]
                if names:
                    out[name] = [np.asarray(g[name][w]) for w in names]
            return out
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: not a Keras HDF5 weight file ({exc})") from None


def load_keras_weights(model: Meso4, path: str | Path) -> Meso4:
    """Copy the Keras weights of ``path`` into ``model`` (kernels HWIO -> OIHW, dense in x out -> out x in)."""
    layers = read_keras_weights(path)
    convs = [v for k, v in layers.items() if k.startswith("conv2d")]
    norms = [v for k, v in layers.items() if k.startswith("batch_normalization")]
    dense = [v for k, v in layers.items() if k.startswith("dense")]
    if (len(convs), len(norms), len(dense)) != (4, 4, 2):
        raise WeightsError(f"{path}: expected Meso-4's 4 conv, 4 batch-norm and 2 dense layers, found "
                           f"{len(convs)}, {len(norms)} and {len(dense)} ({', '.join(layers)})")
    sd = {}
    for i, ((kernel, bias), (gamma, beta, mean, var)) in enumerate(zip(convs, norms)):
        sd.update({f"convs.{i}.weight": kernel.transpose(3, 2, 0, 1), f"convs.{i}.bias": bias,
                   f"norms.{i}.weight": gamma, f"norms.{i}.bias": beta, f"norms.{i}.running_mean": mean,
                   f"norms.{i}.running_var": var})
    for j, (kernel, bias) in enumerate(dense, start=1):
        sd.update({f"dense{j}.weight": kernel.T, f"dense{j}.bias": bias})
    own = model.state_dict()
    for k, v in sd.items():
        if tuple(own[k].shape) != v.shape:
            raise WeightsError(f"{path}: {k} has shape {v.shape}, Meso-4 needs {tuple(own[k].shape)}")
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)).to(own[k].dtype) for k, v in sd.items()}
    sd.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked")})
    model.load_state_dict(sd, strict=True)
    return model


def load_meso4(weights: str = "Meso4_DF", root: Optional[str | Path] = None) -> Meso4:
    """Meso-4 with the published weights ``weights`` (a key of :data:`WEIGHTS`), in ``eval()`` mode, after
    checking the file's SHA-256. ``root``: the folder holding the files (default :data:`WEIGHTS_DIR`)."""
    if weights not in WEIGHTS:
        raise WeightsError(f"unknown MesoNet weights {weights!r}; known: {', '.join(WEIGHTS)}")
    name, expect = WEIGHTS[weights]
    path = Path(root or WEIGHTS_DIR) / name
    if not path.is_file():
        raise WeightsError(f"{path}: MesoNet weight file not found (it ships in peer_models/weights/mesonet/)")
    got = sha256_file(path)
    if got != expect:
        raise WeightsError(f"{path}: SHA-256 {got} does not match the published file's {expect}; refusing "
                           f"to use it (restore it from git or from github.com/DariusAf/MesoNet)")
    return load_keras_weights(Meso4(), path).eval()


@torch.no_grad()
def fake_scores(model: Meso4, faces: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Fake scores (``1 - P(real)``) of ``faces``, uint8 ``[N, 256, 256, 3]`` RGB."""
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"fake_scores: expected faces [N, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {faces.shape}")
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for lo in range(0, len(faces), batch_size):
        x = torch.from_numpy(faces[lo:lo + batch_size]).to(dev).permute(0, 3, 1, 2).float() / 255.0
        out.append(1.0 - model(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
