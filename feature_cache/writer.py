"""Write a feature cache file atomically (layout: :mod:`feature_cache.schema`).

Usage (``cache_features`` stage)::

    with FeatureCacheWriter(out, n_snippets=T, n_vertices=N, dim=C,
                            encoder_sha256=sha256_file(ckpt), params=section) as w:
        for batch in loader:
            w.add(vertices, labels, keys, splits)

Everything goes to a temporary file beside ``path``; only a successful :meth:`close`
(leaving the ``with`` block normally) renames it onto ``path`` with :func:`os.replace`, so a
crash, a Ctrl-C or an exception never leaves a half-written cache under the final name,
and the previous cache (if any) stays intact until the new one is complete.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np

from . import schema as S

__all__ = ["FeatureCacheWriter"]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: Target bytes per HDF5 chunk of ``vertices``; see :func:`_rows_per_chunk`.
CHUNK_BYTES = 64 * 1024
#: Upper bound of windows per chunk, whatever their size.
MAX_ROWS_PER_CHUNK = 32


def _rows_per_chunk(window_bytes: int, target: int = CHUNK_BYTES) -> int:
    """Windows per HDF5 chunk of ``vertices``.

    Training reads *random* windows, and HDF5 always reads (and would decompress) whole
    chunks, so a chunk should hold one window, or only as many as keep it near ``target``
    bytes: a paper-size window (T=5, N=12, C=512: 120 KiB) gets a chunk of its own, a
    demo-size window (a few KiB) shares its chunk with a handful of neighbours so that the
    chunk index stays small and a sequential pass (evaluation, checksum) reads large blocks.
    No compression: float features barely compress and every random read would pay for it.
    Small caches are read into memory whole anyway (``FeatureDataset(in_memory=True)``), so
    the layout only matters for caches too large for that.
    """
    return int(max(1, min(MAX_ROWS_PER_CHUNK, math.ceil(target / max(1, window_bytes)))))


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _params_json(params: Any) -> str:
    if hasattr(params, "model_dump"):  # a pydantic section
        params = params.model_dump(mode="json")
    try:
        return json.dumps(params if params is not None else {}, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"params must be JSON-serialisable: {exc}") from None


class FeatureCacheWriter:
    """Append windows to a new feature cache; the file appears under ``path`` only on success.

    Args:
        path: final file name (``.h5``); its directory is created if missing.
        n_snippets: T, snippets per window.
        n_vertices: N, graph vertices per snippet (attention heads).
        dim: C, channels per vertex.
        encoder_sha256: hex sha256 of the encoder checkpoint (:func:`feature_cache.sha256_file`);
            readers compare it with the checkpoint they expect and refuse a stale cache.
        params: the parameters that shaped the features (dict or pydantic model), stored as JSON.
        expected_windows: if given, :meth:`close` refuses to publish a file with a different
            number of windows (catches a silently skipped batch).

    Use as a context manager: leaving the block by an exception calls :meth:`abort`, which
    deletes the temporary file; leaving it normally calls :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, n_snippets: int, n_vertices: int, dim: int,
                 encoder_sha256: str, params: Any, *, expected_windows: Optional[int] = None) -> None:
        self.path = Path(path)
        self.shape = (int(n_snippets), int(n_vertices), int(dim))
        if min(self.shape) < 1:
            raise ValueError(f"{self.path}: n_snippets, n_vertices and dim must be >= 1, got {self.shape}")
        sha = str(encoder_sha256).strip().lower()
        if not _SHA256_RE.match(sha):
            raise ValueError(
                f"{self.path}: encoder_sha256 must be a 64-digit hex sha256 (use feature_cache.sha256_file), "
                f"got {encoder_sha256!r}")
        self.encoder_sha256 = sha
        self.params_json = _params_json(params)
        self.expected_windows = expected_windows

        self._n = 0
        self._labels: list[np.ndarray] = []
        self._windows: list[np.ndarray] = []
        self._strings: dict[str, list[str]] = {c: [] for c in S.STRING_COLUMNS}
        self._seen: set[tuple] = set()
        self._hasher = S.VerticesHasher()
        self._done = False

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._f = h5py.File(self._tmp, "w")
            self._create_datasets()
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ setup
    def _create_datasets(self) -> None:
        f, (t, n, c) = self._f, self.shape
        rows = _rows_per_chunk(t * n * c * S.VERTEX_DTYPE.itemsize)
        f.create_dataset(S.VERTICES, shape=(0, t, n, c), maxshape=(None, t, n, c),
                         dtype=S.VERTEX_DTYPE, chunks=(rows, t, n, c))
        f.create_dataset(S.LABEL, shape=(0,), maxshape=(None,), dtype=S.LABEL_DTYPE, chunks=(4096,))
        f.create_dataset(S.WINDOW, shape=(0,), maxshape=(None,), dtype=S.WINDOW_DTYPE, chunks=(4096,))
        for name in S.STRING_COLUMNS:
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"),
                             chunks=(1024,))
        f.attrs[S.ATTR_SCHEMA_VERSION] = S.SCHEMA_VERSION
        f.attrs[S.ATTR_ENCODER_SHA256] = self.encoder_sha256
        f.attrs[S.ATTR_PARAMS] = self.params_json

    # ------------------------------------------------------------------ writing
    @property
    def n_windows(self) -> int:
        """Windows added so far."""
        return self._n

    def add(self, vertices: Any, labels: Any, keys: Sequence[tuple], splits: Sequence[str] | str) -> None:
        """Append a batch of B windows.

        Args:
            vertices: float tensor or array [B, T, N, C] (moved to CPU, stored as float32).
            labels: B values in {0, 1}.
            keys: B tuples (dataset, method, video_id, window); unique over the whole file.
            splits: B split names (train/val/test), or one name for the whole batch.
        """
        if self._done:
            raise RuntimeError(f"{self.path}: writer already closed")
        v = _to_numpy(vertices)
        if v.ndim != 4 or tuple(v.shape[1:]) != self.shape:
            raise ValueError(f"{self.path}: vertices must have shape [B, {', '.join(map(str, self.shape))}] "
                             f"(B, T, N, C), got {list(v.shape)}")
        b = v.shape[0]
        if not np.issubdtype(v.dtype, np.floating):
            raise ValueError(f"{self.path}: vertices must be floating point, got {v.dtype}")
        v = np.ascontiguousarray(v, dtype=S.VERTEX_DTYPE)
        if not np.isfinite(v).all():
            raise ValueError(f"{self.path}: vertices contain NaN or inf (batch starting at window {self._n})")

        lab = _to_numpy(labels).reshape(-1)
        if lab.shape[0] != b:
            raise ValueError(f"{self.path}: {lab.shape[0]} labels for {b} windows")
        if not np.isin(lab, (0, 1)).all():
            raise ValueError(f"{self.path}: labels must be 0 or 1, got {sorted(set(lab.tolist()))}")
        keys = list(keys)
        if len(keys) != b:
            raise ValueError(f"{self.path}: {len(keys)} keys for {b} windows")
        splits = [splits] * b if isinstance(splits, str) else list(splits)
        if len(splits) != b:
            raise ValueError(f"{self.path}: {len(splits)} splits for {b} windows")
        bad = sorted({s for s in splits if s not in S.SPLITS})
        if bad:
            raise ValueError(f"{self.path}: unknown split(s) {bad}; expected one of {list(S.SPLITS)}")

        cols: dict[str, list[str]] = {c: [] for c in ("dataset", "method", "video_id")}
        win = np.empty(b, dtype=S.WINDOW_DTYPE)
        batch_seen: set[tuple] = set()
        for i, key in enumerate(keys):
            if len(key) != 4:
                raise ValueError(f"{self.path}: key must be (dataset, method, video_id, window), got {key!r}")
            ds, meth, vid, w = str(key[0]), str(key[1]), str(key[2]), int(key[3])
            if not (ds and meth and vid) or w < 0:
                raise ValueError(f"{self.path}: invalid key {key!r}")
            k = (ds, meth, vid, w)
            if k in self._seen or k in batch_seen:
                raise ValueError(f"{self.path}: duplicate window key {k}")
            batch_seen.add(k)
            cols["dataset"].append(ds)
            cols["method"].append(meth)
            cols["video_id"].append(vid)
            win[i] = w
        cols["split"] = [str(s) for s in splits]

        lo, hi = self._n, self._n + b
        f = self._f
        for name in (S.VERTICES, S.LABEL, S.WINDOW) + S.STRING_COLUMNS:
            f[name].resize(hi, axis=0)
        f[S.VERTICES][lo:hi] = v
        f[S.LABEL][lo:hi] = lab.astype(S.LABEL_DTYPE)
        f[S.WINDOW][lo:hi] = win
        for name in S.STRING_COLUMNS:
            f[name][lo:hi] = np.array(cols[name], dtype=object)
            self._strings[name].extend(cols[name])

        self._hasher.update(v)
        self._labels.append(lab.astype(S.LABEL_DTYPE))
        self._windows.append(win)
        self._seen |= batch_seen
        self._n = hi

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        """Write the final attributes, close and rename onto ``path``. Returns ``path``."""
        if self._done:
            return self.path
        try:
            if self.expected_windows is not None and self._n != self.expected_windows:
                raise ValueError(f"{self.path}: expected {self.expected_windows} windows, got {self._n}; "
                                 "not writing an incomplete cache")
            label = np.concatenate(self._labels) if self._labels else np.zeros(0, S.LABEL_DTYPE)
            window = np.concatenate(self._windows) if self._windows else np.zeros(0, S.WINDOW_DTYPE)
            self._f.attrs[S.ATTR_N_WINDOWS] = self._n
            self._f.attrs[S.ATTR_CONTENT_SHA256] = S.content_digest(
                self._hasher.digest(), label, window, self._strings)
            self._f.close()
            with open(self._tmp, "rb+") as fh:  # data on disk before the rename makes it visible
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp made it 0600
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        """Discard everything written; ``path`` is left as it was."""
        self._done = True
        try:
            if getattr(self, "_f", None) is not None and self._f.id.valid:
                self._f.close()
        finally:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "FeatureCacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        t, n, c = self.shape
        return f"FeatureCacheWriter({str(self.path)!r}, windows={self._n}, T={t}, N={n}, C={c})"
