"""What identifies a crop output besides the params hash (:mod:`pipeline.ingest.crop_settings`): the manifest
row's signature, the bytes of the video and its mask (:func:`content_digest`), the per-video file's path, and the
report stored in a finished file (read back to skip up-to-date videos)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import h5py
import numpy as np

from pipeline.ingest.datasets import MANIFEST_COLUMNS
from pipeline.runtime import sha256_file

__all__ = ["RUN_FIELDS", "row_signature", "content_digest", "output_path", "read_report"]

#: the fields of a video's report that describe a run, not its crops: kept out of the crop files and out of
#: ``report.json`` (they would change the output's hash at every run), written to the run record
#: (:func:`pipeline.ingest.cropping.reports.run_record_path`)
RUN_FIELDS = ("status", "seconds")


def _row_dict(row) -> dict:
    d = dict(row.items()) if hasattr(row, "items") else dict(row)
    out = {}
    for k in MANIFEST_COLUMNS:
        v = d.get(k, "")
        if v is None or (isinstance(v, float) and np.isnan(v)):
            v = ""
        out[k] = v
    out["label"] = int(out["label"])
    out["size_bytes"] = str(out["size_bytes"])
    for k in out:
        if k != "label":
            out[k] = str(out[k])
    return out


_SPLIT_FIELDS = ("split", "identity", "source_id")


def row_signature(row) -> str:
    """The manifest fields whose change re-runs a video: the row without its split assignment (split,
    identity, source id), which does not change the crop and is written only to ``index.csv``, so
    re-drawn splits, a subset of training identities or a held-out family reuse the crops."""
    return json.dumps({k: v for k, v in _row_dict(row).items() if k not in _SPLIT_FIELDS}, sort_keys=True)


def content_digest(row) -> str:
    """SHA-256 over the SHA-256s of the row's video and of its mask file (when it names one; a file that is not
    there counts as ``-``): stored in a crop file, so a video or mask replaced by other bytes of the same size
    (which the row signature cannot see) is cropped again. Raises OSError when a file cannot be read."""
    r = _row_dict(row)
    h = hashlib.sha256()
    for p in (r["path"], r["mask_path"]):
        if p:
            h.update(sha256_file(p).encode() if Path(p).is_file() else b"-")
        h.update(b"\0")
    return h.hexdigest()


def output_path(out_dir: str | Path, row) -> Path:
    r = _row_dict(row)
    return Path(out_dir) / r["dataset"] / r["method"] / f"{r['video_id']}.h5"


def read_report(path: str | Path, phash: Optional[str] = None, rsig: Optional[str] = None,
                kernels: Optional[str] = None, content: Optional[Callable[[], str]] = None) -> Optional[dict]:
    """The report stored in an output file if it is complete and matches ``phash``/``rsig`` and, when given,
    ``kernels`` (:func:`pipeline.cpu_kernels.kernel_signature` of the run that wrote it) and ``content()`` (the
    :func:`content_digest` of its row; called only when all else matches, a file that cannot be read is no
    match); else None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if phash is not None and a.get("params_hash") != phash:
                return None
            if rsig is not None and a.get("row") != rsig:
                return None
            if kernels is not None and a.get("kernels") != kernels:
                return None
            if content is not None and a.get("content") != content():
                return None
            rep = json.loads(a["report"])
            rep["windows"] = int(f["clips"].shape[0]) if "clips" in f else 0
            return rep
    except Exception:
        return None
