"""Pieces shared by the dataset adapters: the manifest schema, row building and file listing."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

__all__ = ["read_json", "MANIFEST_COLUMNS", "VIDEO_KEY_COLUMNS", "SPLITS", "VIDEO_EXTENSIONS",
           "make_row", "rows_to_frame", "list_videos", "require_dir"]

#: Column order of ``data/manifest.csv`` (see docs/CONTRACTS.md).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "dataset", "method", "video_id", "path", "label", "split",
    "identity", "source_id", "mask_path", "size_bytes",
)
#: A video is identified by these columns everywhere downstream (crops, features, scores).
VIDEO_KEY_COLUMNS: tuple[str, ...] = ("dataset", "method", "video_id")
SPLITS: tuple[str, ...] = ("train", "val", "test")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def read_json(path: Path, dataset: Optional[str] = None):
    """Parse a dataset's JSON file; a broken one is a ValueError naming the file, the line and the column."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        who = f"dataset '{dataset}': " if dataset else ""
        raise ValueError(f"{who}{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def make_row(dataset: str, method: str, video_id: str, path: Path, label: int, split: str = "",
             identity: str = "", source_id: str = "", mask_path: str = "") -> dict:
    """One manifest row; ``size_bytes`` is read from the file, paths are stored POSIX-style."""
    return {
        "dataset": dataset, "method": method, "video_id": video_id, "path": path.as_posix(),
        "label": int(label), "split": split, "identity": identity, "source_id": source_id,
        "mask_path": mask_path, "size_bytes": os.path.getsize(path),
    }


def rows_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """A DataFrame with exactly :data:`MANIFEST_COLUMNS` (empty rows give an empty frame)."""
    df = pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS))
    return df.astype({"label": "int64", "size_bytes": "int64"})


def list_videos(folder: Path) -> list[Path]:
    """Video files directly inside ``folder`` (not recursive), sorted by name; [] if absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))


def require_dir(path: Path, what: str, dataset: Optional[str] = None) -> Path:
    """Return ``path`` if it is a directory, else raise naming the dataset and the path."""
    if not path.is_dir():
        who = f"dataset '{dataset}': " if dataset else ""
        raise FileNotFoundError(f"{who}{what} not found: {path}")
    return path
