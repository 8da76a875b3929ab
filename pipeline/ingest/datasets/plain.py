"""Plain folder adapter (``type: plain``), also used for the generated demo data.

Layout under ``root``::

    real/*.{mp4,avi,mov,mkv,webm}      method "real", label 0
    fake/*.mp4                         method "fake", label 1
    fake/<method>/*.mp4                method "<method>", label 1
    splits.csv                         optional (or spec.split_file)

The split file has a ``path`` column (relative to root) and optionally ``split``, ``identity``,
``source_id`` and ``mask_path`` (relative to root; stored joined with root). A relative
``spec.split_file`` is looked up under the root first, then from the working directory.

Split rules: a row's ``split`` from the split file wins; videos the split file does not list are
dropped (a warning gives the count). Rows without a split (no split file, or an empty ``split``)
get a seeded split by group (``spec.val_fraction``, ``spec.test_fraction``): the group is the
identity where one is given, else the video itself, and then each method is cut separately so
every split holds real and fake videos.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import pandas as pd

from pipeline.params import DatasetSpec
from .common import SPLITS, VIDEO_EXTENSIONS, list_videos, make_row
from .splits import finish_rows

__all__ = ["SPLIT_FILE", "find_videos", "read_split_file", "build_plain"]

SPLIT_FILE = "splits.csv"
_OPTIONAL = ("split", "identity", "source_id", "mask_path")


def find_videos(root: Path) -> list[tuple[str, Path]]:
    """(method, path) of every video in ``real/``, ``fake/`` and ``fake/<method>/``."""
    found = [("real", p) for p in list_videos(root / "real")]
    found += [("fake", p) for p in list_videos(root / "fake")]
    fake = root / "fake"
    if fake.is_dir():
        for sub in sorted(d for d in fake.iterdir() if d.is_dir() and not d.name.startswith(".")
                          and d.suffix.lower() not in VIDEO_EXTENSIONS):  # a folder `x.mp4`: skipped, warned
            found += [(sub.name, p) for p in list_videos(sub)]
    return found


def _split_file_path(spec: DatasetSpec, root: Path) -> Optional[Path]:
    """The split file to use, or None; a configured file that does not exist is an error."""
    if spec.split_file is None:
        default = root / SPLIT_FILE
        return default if default.is_file() else None
    for cand in (root / spec.split_file, Path(spec.split_file)):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"dataset '{spec.name}': split_file not found: {spec.split_file} "
                            f"(looked under {root} and the working directory)")


def read_split_file(path: Path) -> dict[str, dict[str, str]]:
    """``relpath -> {split, identity, source_id, mask_path}`` (missing columns read as "")."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "path" not in df.columns:
        raise ValueError(f"{path}: split file needs a 'path' column, has {list(df.columns)}")
    bad = sorted(set(df.get("split", pd.Series(dtype=str))) - set(SPLITS) - {""})
    if bad:
        raise ValueError(f"{path}: unknown split values {bad} (allowed: {list(SPLITS)})")
    for col in _OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    return {Path(r["path"]).as_posix(): {c: r[c] for c in _OPTIONAL} for r in df.to_dict("records")}


def build_plain(spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Manifest rows of one plain-layout dataset (see the module docstring for the rules)."""
    root = Path(spec.root)
    split_path = _split_file_path(spec, root)
    listed = read_split_file(split_path) if split_path else None
    rows, dropped, seen = [], 0, set()
    for method, p in find_videos(root):
        rel = p.relative_to(root).as_posix()
        seen.add(rel)
        info = {c: "" for c in _OPTIONAL} if listed is None else listed.get(rel)
        if info is None:
            dropped += 1
            continue
        mask = (root / info["mask_path"]).as_posix() if info["mask_path"] else ""
        rows.append(make_row(spec.name, method, p.stem, p, int(method != "real"), info["split"],
                             info["identity"], info["source_id"], mask))
    if dropped:
        warnings.warn(f"dataset '{spec.name}': {dropped} videos not listed in {split_path}, dropped")
    if listed is not None:
        missing = len(set(listed) - seen)
        if missing:
            warnings.warn(f"dataset '{spec.name}': {missing} videos listed in {split_path} not found")
    # empty splits are filled by identity group, or by video stratified by method when no identities
    by_identity = any(r["identity"] for r in rows if not r["split"])
    return finish_rows(rows, spec, seed, lambda r: r["identity"] or f"{r['method']}/{r['video_id']}",
                       spec.test_fraction, stratify=not by_identity)
