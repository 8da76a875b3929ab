"""Read and check a feature cache file (layout: :mod:`feature_cache.schema`).

:func:`open_cache` refuses, with a :class:`FeatureCacheError` naming the file and the
problem, any file that is missing, not HDF5 or truncated, of another schema version,
built from another encoder checkpoint than the one expected (stale), missing a dataset
or attribute, with datasets of different lengths, or whose content no longer matches the
checksum written when it was created. :class:`FeatureDataset` is the torch Dataset the
``train_relation`` and ``evaluate`` stages iterate over.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipeline.errors import InputRefused

from . import schema as S

__all__ = ["FeatureCacheError", "FeatureCache", "open_cache", "FeatureDataset", "load_split"]

#: Bytes of vertices read per block during a sequential pass (checksum, loading).
_READ_BLOCK_BYTES = 16 << 20


class FeatureCacheError(InputRefused):
    """A feature cache that must not be used; the message says which file and why. A stage that meets one
    prints it with the fix, without a traceback (:mod:`pipeline.errors`)."""

    fix = ("the cache is cache_features' output: `dvc repro` writes it again from models/encoder.pt and the crops "
           "(`dvc checkout cache_features` restores the committed one)")


@dataclass(frozen=True)
class FeatureCache:
    """Metadata and keys of a checked cache file (vertices stay on disk until asked for).

    ``keys`` has one row per window, in file order (its index is the file row), with columns
    dataset, method, video_id, window, split, label.
    """

    path: Path
    schema_version: int
    encoder_sha256: str
    params: dict
    created: Optional[str]  # only in files written before 2026-11-27 (see feature_cache.schema)
    n_windows: int
    content_sha256: str
    shape: tuple[int, int, int]  # (T, N, C)
    keys: pd.DataFrame = field(repr=False)

    @property
    def n_snippets(self) -> int:
        return self.shape[0]

    @property
    def n_vertices(self) -> int:
        return self.shape[1]

    @property
    def dim(self) -> int:
        return self.shape[2]

    def read_vertices(self, rows: Optional[Sequence[int] | np.ndarray] = None) -> np.ndarray:
        """Vertices float32 [len(rows), T, N, C] (all windows when ``rows`` is None)."""
        with _h5(self.path) as f:
            ds = f[S.VERTICES]
            if rows is None:
                return _read_all(self.path, ds)
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size == 0:
                return np.zeros((0,) + self.shape, S.VERTEX_DTYPE)
            order = np.argsort(rows, kind="stable")  # h5py wants increasing indices
            uniq, inv = np.unique(rows[order], return_inverse=True)
            out = np.empty((rows.size,) + self.shape, S.VERTEX_DTYPE)
            out[order] = _guard(self.path, lambda: ds[uniq])[inv]
            return out


# --------------------------------------------------------------------------- helpers
def _fail(path: Path, problem: str) -> FeatureCacheError:
    return FeatureCacheError(f"feature cache {path}: {problem}")


def _guard(path: Path, fn):
    """Run a read; an HDF5 error while reading means a damaged file."""
    try:
        return fn()
    except (OSError, RuntimeError, KeyError) as exc:
        raise _fail(path, f"cannot read (corrupt or truncated file?): {exc}") from None


def _h5(path: Path) -> h5py.File:
    if not path.exists():
        raise _fail(path, "file not found; run the cache_features stage (dvc repro cache_features)")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes); re-run cache_features")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise _fail(path, f"not a readable HDF5 file (truncated or corrupt?): {exc}; "
                          "re-run cache_features") from None


def _read_all(path: Path, ds: h5py.Dataset, hasher: Optional[S.VerticesHasher] = None) -> np.ndarray:
    out = np.empty(ds.shape, S.VERTEX_DTYPE)
    per_row = max(1, int(np.prod(ds.shape[1:])) * S.VERTEX_DTYPE.itemsize)
    for sl in S.iter_blocks(ds.shape[0], max(1, _READ_BLOCK_BYTES // per_row)):
        out[sl] = _guard(path, lambda: ds[sl])
        if hasher is not None:
            hasher.update(out[sl])
    return out


def _hash_vertices(path: Path, ds: h5py.Dataset) -> bytes:
    hasher = S.VerticesHasher()
    per_row = max(1, int(np.prod(ds.shape[1:])) * S.VERTEX_DTYPE.itemsize)
    for sl in S.iter_blocks(ds.shape[0], max(1, _READ_BLOCK_BYTES // per_row)):
        hasher.update(_guard(path, lambda: ds[sl]))
    return hasher.digest()


def _attr_str(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _open(path: str | os.PathLike, expect_encoder_sha256: Optional[str], verify: bool,
          load: bool) -> tuple[FeatureCache, Optional[np.ndarray]]:
    path = Path(path)
    with _h5(path) as f:
        attrs = _guard(path, lambda: dict(f.attrs))
        if S.ATTR_SCHEMA_VERSION not in attrs:
            raise _fail(path, "no schema_version attribute: not a feature cache, or an unfinished one")
        version = int(attrs[S.ATTR_SCHEMA_VERSION])
        if version != S.SCHEMA_VERSION:
            raise _fail(path, f"schema version {version}, this code reads version {S.SCHEMA_VERSION}; "
                              "re-run cache_features")
        missing_attrs = [a for a in S.REQUIRED_ATTRS if a not in attrs]
        if missing_attrs:
            raise _fail(path, f"missing attribute(s) {missing_attrs}; re-run cache_features")
        missing = [d for d in S.ALL_DATASETS if d not in f]
        if missing:
            raise _fail(path, f"missing dataset(s) {missing}; re-run cache_features")

        v = f[S.VERTICES]
        if v.ndim != 4 or v.dtype != S.VERTEX_DTYPE:
            raise _fail(path, f"'vertices' must be float32 [W, T, N, C], found {v.dtype} {list(v.shape)}")
        lengths = {d: f[d].shape[0] if f[d].ndim == 1 else None for d in S.ALL_DATASETS if d != S.VERTICES}
        lengths[S.VERTICES] = v.shape[0]
        n_attr = int(attrs[S.ATTR_N_WINDOWS])
        if any(n != n_attr for n in lengths.values()):
            desc = ", ".join(f"{d}={n if n is not None else 'not 1-D'}" for d, n in lengths.items())
            raise _fail(path, f"inconsistent lengths: n_windows attribute {n_attr}, datasets {desc}")

        enc = _attr_str(attrs[S.ATTR_ENCODER_SHA256]).lower()
        if expect_encoder_sha256 is not None and enc != str(expect_encoder_sha256).strip().lower():
            raise _fail(path, f"stale cache: built from encoder {enc}, expected {expect_encoder_sha256}; "
                              "re-run cache_features")

        label = _guard(path, lambda: f[S.LABEL][()]).astype(S.LABEL_DTYPE)
        window = _guard(path, lambda: f[S.WINDOW][()]).astype(S.WINDOW_DTYPE)
        strings = {c: _guard(path, lambda: f[c].asstr()[()]).astype(object) for c in S.STRING_COLUMNS}

        vertices = None
        if verify or load:
            hasher = S.VerticesHasher()
            if load:
                vertices = _read_all(path, v, hasher)
                vdig = hasher.digest()
            else:
                vdig = _hash_vertices(path, v)
            if verify:
                want = _attr_str(attrs[S.ATTR_CONTENT_SHA256])
                got = S.content_digest(vdig, label, window, strings)
                if got != want:
                    raise _fail(path, f"content checksum mismatch (stored {want[:12]}..., computed {got[:12]}...): "
                                      "the file was modified or damaged after it was written; re-run cache_features")
        if not np.isin(label, (0, 1)).all():
            raise _fail(path, f"labels outside {{0, 1}}: {sorted(set(label.tolist()))}")

        try:
            params = json.loads(_attr_str(attrs[S.ATTR_PARAMS]))
        except json.JSONDecodeError as exc:
            raise _fail(path, f"'params' attribute is not valid JSON: {exc}") from None

        keys = pd.DataFrame({"dataset": strings["dataset"], "method": strings["method"],
                             "video_id": strings["video_id"], "window": window.astype(np.int64),
                             "split": strings["split"], "label": label.astype(np.int64)})
        info = FeatureCache(path=path, schema_version=version, encoder_sha256=enc, params=params,
                            created=_attr_str(attrs[S.ATTR_CREATED]) if S.ATTR_CREATED in attrs else None,
                            n_windows=n_attr,
                            content_sha256=_attr_str(attrs[S.ATTR_CONTENT_SHA256]),
                            shape=tuple(int(x) for x in v.shape[1:]), keys=keys)
    return info, vertices


def open_cache(path: str | os.PathLike, expect_encoder_sha256: Optional[str] = None,
               verify: bool = True) -> FeatureCache:
    """Open and check a cache file; returns its metadata and keys.

    Args:
        path: the cache file.
        expect_encoder_sha256: sha256 of the encoder checkpoint the caller is about to use
            with this cache (:func:`feature_cache.sha256_file`); ``None`` skips the check.
        verify: recompute the content checksum (one sequential read of the vertices).

    Raises:
        FeatureCacheError: the message names the file and the problem.
    """
    return _open(path, expect_encoder_sha256, verify, load=False)[0]


class FeatureDataset(Dataset):
    """Torch Dataset over the windows of a feature cache, optionally of one split.

    Item ``i`` is ``(vertices, label, i)``: vertices float32 tensor [T, N, C], label a 0-d
    float32 tensor (0. real, 1. fake; collates to [B] for ``BCEWithLogitsLoss``), and ``i``
    the dataset index, which is also the row of :attr:`keys` describing the window
    (dataset, method, video_id, window, split, label; column ``row`` is the file row).

    Args:
        path: the cache file.
        split: keep only windows of this split (or of these splits); ``None`` keeps all.
        expect_encoder_sha256: refuse a cache built from another encoder checkpoint.
        in_memory: read the selected vertices into memory once (default; the demo cache is a
            few MB). ``False`` reads each window from the file on demand, opening one handle
            per process so the dataset works with ``DataLoader(num_workers > 0)``.
        verify: recompute the content checksum on open (for ``in_memory`` it costs nothing
            extra: the checksum is computed during the load).
    """

    def __init__(self, path: str | os.PathLike, split: Optional[str | Sequence[str]] = None,
                 expect_encoder_sha256: Optional[str] = None, in_memory: bool = True,
                 verify: bool = True) -> None:
        self.path = Path(path)
        self.info, allv = _open(self.path, expect_encoder_sha256, verify, load=in_memory)
        keys = self.info.keys
        if split is None:
            rows = np.arange(len(keys), dtype=np.int64)
        else:
            wanted = [split] if isinstance(split, str) else list(split)
            bad = [s for s in wanted if s not in S.SPLITS]
            if bad:
                raise ValueError(f"unknown split(s) {bad}; expected one of {list(S.SPLITS)}")
            rows = np.flatnonzero(keys["split"].isin(wanted).to_numpy()).astype(np.int64)
        self.split = split
        self.rows = rows
        self.keys = keys.iloc[rows].reset_index(names="row")[
            ["dataset", "method", "video_id", "window", "split", "label", "row"]]
        self.labels = self.keys["label"].to_numpy(np.float32)
        self.in_memory = in_memory
        if allv is not None and split is not None:
            allv = allv[rows]
        self._vertices = allv
        self._file: Optional[h5py.File] = None
        self._pid: Optional[int] = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, N, C) of one item."""
        return self.info.shape

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        i %= len(self)
        if self._vertices is not None:
            v = self._vertices[i]
        else:
            v = _guard(self.path, lambda: self._handle()[S.VERTICES][int(self.rows[i])])
        return torch.from_numpy(np.array(v, dtype=np.float32)), torch.tensor(self.labels[i]), i

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = _h5(self.path)
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close the on-demand file handle (if any)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles do not cross process boundaries
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        t, n, c = self.shape
        return (f"FeatureDataset({str(self.path)!r}, split={self.split!r}, windows={len(self)}, "
                f"T={t}, N={n}, C={c}, in_memory={self.in_memory})")


def load_split(path: str | os.PathLike, split: str, expect_encoder_sha256: Optional[str] = None):
    """All windows of one split as tensors: ``(vertices [W, T, N, C], labels float [W], keys DataFrame)``;
    ``(None, None, keys)`` when the split is empty."""
    ds = FeatureDataset(path, split=split, expect_encoder_sha256=expect_encoder_sha256)
    if len(ds) == 0:
        return None, None, ds.keys
    xs, ys = zip(*[(ds[i][0], ds[i][1]) for i in range(len(ds))])
    return (torch.stack(xs), torch.stack([torch.as_tensor(y, dtype=torch.float32) for y in ys]),
            ds.keys.reset_index(drop=True))
