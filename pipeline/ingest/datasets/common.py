"""Pieces shared by the dataset adapters: the manifest schema, row building and file listing."""
from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

__all__ = ["read_json", "MANIFEST_COLUMNS", "VIDEO_KEY_COLUMNS", "SPLITS", "VIDEO_EXTENSIONS",
           "make_row", "rows_to_frame", "list_videos", "not_a_file_reason", "require_dir"]

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


def not_a_file_reason(path: Path) -> Optional[str]:
    """Why ``path`` (named like a video) cannot be read as a file, or None if it is a regular file:
    a symbolic link loop, a broken symbolic link, a directory, or something else (a socket, a FIFO...)."""
    path = Path(path)
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:                      # Python < 3.13
            return "symbolic link loop"
        except OSError as exc:
            return "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link (target missing)"
    if path.is_file():
        return None
    if path.is_dir():
        return "a directory named like a video, not a video file"
    return "not found" if not path.exists() else "not a regular file"


def list_videos(folder: Path) -> list[Path]:
    """Video files directly inside ``folder`` (not recursive), sorted by name; [] if absent. Entries named like
    a video that are no readable file (a directory ``x.mp4``, a symbolic link loop, a broken link) are skipped
    with one warning naming each and why."""
    if not folder.is_dir():
        return []
    named = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))
    problems = {p: not_a_file_reason(p) for p in named}
    skipped = [f"{p.name} ({why})" for p, why in problems.items() if why]
    if skipped:
        warnings.warn(f"{folder}: skipped {len(skipped)} entries named like videos: {', '.join(skipped)}")
    return [p for p, why in problems.items() if not why]


def require_dir(path: Path, what: str, dataset: Optional[str] = None) -> Path:
    """Return ``path`` if it is a directory, else raise naming the dataset and the path."""
    if not path.is_dir():
        who = f"dataset '{dataset}': " if dataset else ""
        raise FileNotFoundError(f"{who}{what} not found: {path}")
    return path
