"""A cheap fingerprint of the dataset folders, so that DVC re-runs the manifest when a video is added,
deleted, replaced or made (un)readable, and only then.

:func:`dataset_listing` walks every configured dataset root (no file is read: names, sizes, modification
times and whether the file can be opened for reading) and returns, per dataset, the number of files, their
total size and the SHA-256 of the sorted listing. The ``scan`` stage writes it to ``data/listing.json``; the
stage is ``always_changed`` in ``dvc.yaml`` (it runs on every ``dvc repro``, in about a second per 100,000
files) and ``manifest`` depends on its output, which changes only when the listing does: an unchanged
dataset re-runs neither ``manifest`` nor ``crop``.

A root inside ``data/demo`` (a DVC output that ``manifest`` already depends on, hashed by DVC itself) is
recorded without a listing, so a fresh checkout of the same demo data (new modification times) re-runs nothing.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from pipeline.params import DatasetSpec
from pipeline.paths import DEMO_DIR

__all__ = ["file_entries", "dataset_listing"]


def file_entries(root: Path) -> list[str]:
    """``relpath<TAB>size<TAB>mtime_ns<TAB>readable`` of every file under ``root`` (symbolic links followed for
    files, not for folders; an entry that cannot be stat-ed, such as a link loop, gets its error), sorted."""
    lines = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            try:
                st = path.stat()
                lines.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{os.access(path, os.R_OK)}")
            except OSError as exc:
                lines.append(f"{rel}\terror\t{exc.strerror or exc}")
    return sorted(lines)


def _tracked_by_dvc(root: Path) -> bool:
    try:
        root.resolve().relative_to(DEMO_DIR.resolve())
        return True
    except ValueError:
        return False


def dataset_listing(specs: Sequence[DatasetSpec]) -> dict:
    """``{dataset name: {root, files, bytes, sha256}}`` (see the module docstring); a missing root is listed
    as missing (the manifest stage reports it)."""
    out = {}
    for spec in specs:
        root = Path(spec.root)
        if _tracked_by_dvc(root):
            out[spec.name] = {"root": spec.root, "tracked_by_dvc": True}
            continue
        if not root.is_dir():
            out[spec.name] = {"root": spec.root, "missing": True}
            continue
        lines = file_entries(root)
        size = sum(int(x.split("\t")[1]) for x in lines if x.split("\t")[1] != "error")
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        out[spec.name] = {"root": spec.root, "files": len(lines), "bytes": size, "sha256": digest}
    return out
