"""What identifies a crop output besides the params hash (:mod:`pipeline.ingest.crop_settings`): the manifest
row's signature, the per-video file's path, and the report stored in a finished file (read back to skip up-to-date
videos)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from pipeline.ingest.datasets import MANIFEST_COLUMNS

__all__ = ["RUN_FIELDS", "row_signature", "output_path", "read_report"]

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


def output_path(out_dir: str | Path, row) -> Path:
    r = _row_dict(row)
    return Path(out_dir) / r["dataset"] / r["method"] / f"{r['video_id']}.h5"


def read_report(path: str | Path, phash: Optional[str] = None, rsig: Optional[str] = None,
                kernels: Optional[str] = None) -> Optional[dict]:
    """The report stored in an output file if it is complete and matches ``phash``/``rsig`` and, when given,
    ``kernels`` (:func:`pipeline.cpu_kernels.kernel_signature` of the run that wrote it); else None."""
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
            rep = json.loads(a["report"])
            rep["windows"] = int(f["clips"].shape[0]) if "clips" in f else 0
            return rep
    except Exception:
        return None
