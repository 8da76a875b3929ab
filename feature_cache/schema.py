"""Layout of a feature cache file, in one place.

A feature cache is one HDF5 file holding the graph vertices of every window (clip) the
frozen encoder saw, written once by the ``cache_features`` stage and read many times by
``train_relation`` and ``evaluate``. Row ``w`` of every dataset describes the same window.

=================  ===============  ===========  ==================================================
dataset            dtype            shape        meaning
=================  ===============  ===========  ==================================================
``vertices``       float32          [W, T, N, C] vertex features (T snippets, N vertices, C channels)
``label``          int8             [W]          0 real, 1 fake
``dataset``        UTF-8 string     [W]          manifest ``dataset``
``method``         UTF-8 string     [W]          manifest ``method``
``video_id``       UTF-8 string     [W]          manifest ``video_id``
``window``         int32            [W]          window index within the video (crop file row)
``split``          UTF-8 string     [W]          train / val / test
=================  ===============  ===========  ==================================================

File attributes: ``schema_version`` (int), ``encoder_sha256`` (sha256 of the encoder
checkpoint the vertices came from), ``params`` (JSON of the parameters that shaped the
features), ``n_windows`` (W) and ``content_sha256`` (:func:`content_digest` of everything above,
written when the writer closes). Nothing in the file records when or where it was written (files of
schema 1 written before 2026-11-27 carry a ``created`` time, which readers ignore), so the same encoder
and crops give the same bytes and DVC sees an unchanged output: the run's time is in its MLflow run.

The key of a row is (dataset, method, video_id, window) and is unique in a file.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

from pipeline.runtime import sha256_file  # the project's one file hash, handed on as feature_cache.sha256_file

__all__ = [
    "SCHEMA_VERSION", "VERTICES", "LABEL", "WINDOW", "STRING_COLUMNS", "KEY_COLUMNS",
    "ALL_DATASETS", "VERTEX_DTYPE", "LABEL_DTYPE", "WINDOW_DTYPE", "SPLITS",
    "ATTR_SCHEMA_VERSION", "ATTR_ENCODER_SHA256", "ATTR_PARAMS", "ATTR_CREATED",
    "ATTR_N_WINDOWS", "ATTR_CONTENT_SHA256", "REQUIRED_ATTRS",
    "VerticesHasher", "content_digest", "sha256_file",
]

#: Bump when the layout changes; readers refuse any other version.
SCHEMA_VERSION = 1

# dataset names
VERTICES = "vertices"
LABEL = "label"
WINDOW = "window"
STRING_COLUMNS = ("dataset", "method", "video_id", "split")
KEY_COLUMNS = ("dataset", "method", "video_id", "window")
ALL_DATASETS = (VERTICES, LABEL, WINDOW) + STRING_COLUMNS

# dtypes (strings are h5py variable-length UTF-8, see writer)
VERTEX_DTYPE = np.dtype("<f4")
LABEL_DTYPE = np.dtype("i1")
WINDOW_DTYPE = np.dtype("<i4")

SPLITS = ("train", "val", "test")

# attribute names
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_ENCODER_SHA256 = "encoder_sha256"
ATTR_PARAMS = "params"
ATTR_CREATED = "created"      # older files only: read if present, never written
ATTR_N_WINDOWS = "n_windows"
ATTR_CONTENT_SHA256 = "content_sha256"
REQUIRED_ATTRS = (ATTR_SCHEMA_VERSION, ATTR_ENCODER_SHA256, ATTR_PARAMS, ATTR_N_WINDOWS, ATTR_CONTENT_SHA256)


class VerticesHasher:
    """Incremental sha256 of the vertex array as stored: float32, little-endian, C order,
    window after window. The writer feeds it batch by batch; the reader chunk by chunk."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, block: np.ndarray) -> None:
        self._h.update(np.ascontiguousarray(block, dtype=VERTEX_DTYPE).tobytes())

    def digest(self) -> bytes:
        return self._h.digest()


def content_digest(vertices_digest: bytes, label: np.ndarray, window: np.ndarray,
                   strings: dict[str, Sequence[str]]) -> str:
    """The ``content_sha256`` attribute: sha256 over the vertices digest, the labels, the
    window indices and every string column (so a flipped label or a renamed video is caught
    as well as a changed feature value)."""
    h = hashlib.sha256()
    h.update(b"mrl-feature-cache/v%d\0" % SCHEMA_VERSION)
    h.update(vertices_digest)
    h.update(np.ascontiguousarray(label, dtype=LABEL_DTYPE).tobytes())
    h.update(np.ascontiguousarray(window, dtype=WINDOW_DTYPE).tobytes())
    for name in STRING_COLUMNS:
        h.update(name.encode() + b"\0")
        for s in strings[name]:
            h.update(_as_str(s).encode("utf-8") + b"\0")
    return h.hexdigest()


def _as_str(s: object) -> str:
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


def iter_blocks(n: int, size: int) -> Iterable[slice]:
    """Consecutive slices covering ``range(n)`` in steps of ``size``."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))
