"""The backbone maps ``F_0`` of the windows that Grad-CAM explains: written by ``cache_features``, read by
``evaluate``.

Grad-CAM (paper Sec. IV-F) weighs the channels of ``F_0``, the output of ``encoder.feature_layer``, by the
gradient of the fake logit with respect to it. ``F_0`` is a function of the encoder and the crops only, not of
the relation learner or its masking, so it is computed once per encoder, beside the vertices, and ``evaluate``
differentiates only the STA and the relation learner from it: a masking experiment (``-S mask.rate``) does not
run the backbone again (``pipeline.scoring.explain.gradcam_feature_maps``).

=================  ===============  ========================  ==========================================
dataset            dtype            shape                     meaning
=================  ===============  ========================  ==========================================
``maps``           float32          [W, T, C, d, h, w]        ``F_0`` of each snippet of each window
``dataset``        UTF-8 string     [W]                       manifest ``dataset``
``method``         UTF-8 string     [W]                       manifest ``method``
``video_id``       UTF-8 string     [W]                       manifest ``video_id``
``window``         int32            [W]                       window index within the video
=================  ===============  ========================  ==========================================

File attributes: ``format`` (:data:`MAPS_FORMAT`), ``encoder_sha256`` (of the encoder file the maps came
from; a reader given another one refuses the file), ``split`` and ``n_windows``. As for the vertices, nothing
records when or where the file was written: the same encoder and crops give the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np

from pipeline.errors import InputRefused
from pipeline.runtime import atomic_path

from . import schema as S

__all__ = ["MAPS_FORMAT", "FeatureMaps", "write_feature_maps", "read_feature_maps"]

MAPS_FORMAT = "mrl-feature-maps/1"
MAPS = "maps"


@dataclass
class FeatureMaps:
    """What :func:`read_feature_maps` returns: ``maps`` ``[W, T, C, d, h, w]`` and the (dataset, method,
    video_id, window) key of each row."""
    maps: np.ndarray
    keys: list[tuple]
    encoder_sha256: str
    split: str

    def rows(self) -> dict[tuple, int]:
        """key -> row of :attr:`maps`."""
        return {k: i for i, k in enumerate(self.keys)}


def write_feature_maps(path: str | Path, maps: np.ndarray, keys: Sequence[tuple], encoder_sha256: str,
                       split: str) -> Path:
    """Write ``maps`` ``[W, T, C, d, h, w]`` (float32) with one (dataset, method, video_id, window) key per row,
    atomically (a temporary file renamed over ``path``)."""
    maps = np.ascontiguousarray(maps, dtype=S.VERTEX_DTYPE)
    if maps.ndim != 6 or len(maps) != len(keys):
        raise ValueError(f"{path}: expected maps [W, T, C, d, h, w] with one key per row, got {maps.shape} and "
                         f"{len(keys)} keys")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate window keys")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        chunk = (1,) + maps.shape[1:] if len(maps) else None
        f.create_dataset(MAPS, data=maps, chunks=chunk)
        for j, name in enumerate(S.KEY_COLUMNS[:3]):
            f.create_dataset(name, data=np.array([str(k[j]) for k in keys], dtype=object),
                             dtype=h5py.string_dtype("utf-8"))
        f.create_dataset(S.WINDOW, data=np.array([int(k[3]) for k in keys], dtype=S.WINDOW_DTYPE))
        f.attrs["format"] = MAPS_FORMAT
        f.attrs[S.ATTR_ENCODER_SHA256] = str(encoder_sha256)
        f.attrs["split"] = split
        f.attrs[S.ATTR_N_WINDOWS] = len(keys)
    return Path(path)


def read_feature_maps(path: str | Path, encoder_sha256: Optional[str] = None) -> FeatureMaps:
    """The maps of ``path``; refused (:class:`pipeline.errors.InputRefused`, naming the file and the fix) when it
    is not such a file or, with ``encoder_sha256``, when another encoder wrote it."""
    fix = "re-run cache_features (dvc repro cache_features)"
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != MAPS_FORMAT:
                raise InputRefused(f"{path}: not a feature-maps file of format {MAPS_FORMAT} "
                                   f"(format {f.attrs.get('format')!r})", fix=fix)
            sha = str(f.attrs[S.ATTR_ENCODER_SHA256])
            if encoder_sha256 and sha != encoder_sha256:
                raise InputRefused(f"{path}: written from another encoder than the one given (SHA-256 {sha[:12]}... "
                                   f"against {encoder_sha256[:12]}...)", fix=fix)
            cols = [[v.decode() if isinstance(v, bytes) else str(v) for v in f[name][()]] for name in S.KEY_COLUMNS[:3]]
            keys = list(zip(*cols, (int(w) for w in f[S.WINDOW][()])))
            return FeatureMaps(f[MAPS][()], keys, sha, str(f.attrs["split"]))
    except OSError as e:
        raise InputRefused(f"{path}: cannot read it as HDF5 ({e})", fix=fix) from None
