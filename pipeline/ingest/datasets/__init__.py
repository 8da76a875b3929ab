"""Dataset adapters: turn the datasets on disk into one manifest (one row per video).

Each ``DatasetSpec.type`` has an adapter module (:mod:`.plain`, :mod:`.ffpp`, :mod:`.celebdf`,
:mod:`.dfdc`) whose docstring states its layout and split rules. :func:`build_manifest` runs them,
applies ``test_only``, checks that each split the model trains on (train, val) holds both real and fake
videos (an error naming the folders looked in otherwise), sorts the rows by (dataset, method, video_id) and runs
:func:`~.splits.check_leaks`, so a leaking manifest is never written. The same seed and the same
files always give the identical manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.params import DatasetSpec
from pipeline.runtime import atomic_write
from .celebdf import build_celebdf
from .common import MANIFEST_COLUMNS, SPLITS, VIDEO_KEY_COLUMNS, rows_to_frame
from .dfdc import build_dfdc
from .ffpp import build_ffpp, folders_looked_in
from .plain import build_plain
from .splits import assign_group_splits, check_leaks

__all__ = ["MANIFEST_COLUMNS", "VIDEO_KEY_COLUMNS", "SPLITS", "ADAPTERS", "build_dataset",
           "build_manifest", "read_manifest", "write_manifest", "check_leaks", "assign_group_splits"]

#: ``DatasetSpec.type`` -> adapter ``(spec, seed) -> DataFrame`` with :data:`MANIFEST_COLUMNS`.
#: Splits the model learns from (train) or is selected on (val): each needs real and fake videos.
TRAINED_SPLITS: tuple[str, ...] = ("train", "val")

ADAPTERS: dict[str, Callable[[DatasetSpec, int], pd.DataFrame]] = {
    "plain": build_plain, "ffpp": build_ffpp, "celebdf": build_celebdf, "dfdc": build_dfdc,
}


def build_dataset(spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Rows of one dataset; a missing root is an error naming the dataset and the path."""
    root = Path(spec.root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset '{spec.name}' (type {spec.type}): root folder not found: {root}")
    df = ADAPTERS[spec.type](spec, seed)
    if spec.test_only:
        df["split"] = "test"
    if df.empty:
        raise ValueError(f"dataset '{spec.name}' (type {spec.type}): no videos found under {root}")
    _check_both_labels(spec, df)
    return df


def _folders_looked_in(spec: DatasetSpec, df: pd.DataFrame) -> list[str]:
    if spec.type == "ffpp":
        return folders_looked_in(spec)
    return sorted({Path(p).parent.as_posix() for p in df["path"]}) or [str(spec.root)]


def _check_both_labels(spec: DatasetSpec, df: pd.DataFrame) -> None:
    """A split the model trains on (train, val) that holds videos must hold real and fake ones."""
    for split in TRAINED_SPLITS:
        labels = df.loc[df["split"] == split, "label"].astype(int)
        if len(labels) and labels.nunique() < 2:
            n_fake = int(labels.sum())
            folders = "\n    ".join(_folders_looked_in(spec, df))
            raise ValueError(f"dataset '{spec.name}' (type {spec.type}): split '{split}' has {len(labels) - n_fake} "
                             f"real and {n_fake} fake videos; both are needed to train. Looked in:\n    {folders}")


def keep_train_identities(df: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Drop the training videos of all but ``k`` training identities (val and test untouched).

    The identities are ranked once by a seeded permutation and the first ``k`` kept, so the training
    set of a smaller ``k`` is a subset of a larger one's (a learning curve over nested sets). An
    identity is a (dataset, identity) pair. Every video of a kept identity stays, fakes made from it
    included."""
    train = df["split"] == "train"
    idents = sorted(set(zip(df.loc[train, "dataset"], df.loc[train, "identity"])))
    if k > len(idents):
        raise ValueError(f"data.train_identities: {k} asked, the training split has only {len(idents)} "
                         f"identities")
    order = np.random.default_rng([int(seed), 0x1D]).permutation(len(idents))
    keep = {idents[i] for i in order[:k]}
    drop = train & ~pd.Series(list(zip(df["dataset"], df["identity"])), index=df.index).isin(keep)
    out = df[~drop].reset_index(drop=True)
    labels = out.loc[out["split"] == "train", "label"].astype(int)
    if labels.nunique() < 2:
        raise ValueError(f"data.train_identities: with {k} identities the training split has only "
                         f"{'fake' if labels.all() else 'real'} videos")
    return out


def build_manifest(specs: list[DatasetSpec], seed: int, holdout_methods: Sequence[str] = (),
                   train_identities: Optional[int] = None) -> pd.DataFrame:
    """The manifest of all configured datasets, sorted by (dataset, method, video_id), leak-checked.

    ``holdout_methods``: fake methods removed from train and val and kept in test, so the test AUC of
    those methods (``evaluate``'s ``per_method``) measures generalisation to an unseen manipulation.
    ``train_identities``: see :func:`keep_train_identities`."""
    frames = [build_dataset(spec, seed) for spec in specs]
    df = pd.concat(frames, ignore_index=True) if frames else rows_to_frame([])
    df = df.sort_values(list(VIDEO_KEY_COLUMNS), kind="mergesort").reset_index(drop=True)
    check_leaks(df, {spec.name: spec.type for spec in specs})
    if holdout_methods:
        fakes = df[df["label"].astype(int) == 1]
        unknown = sorted(set(holdout_methods) - set(fakes["method"]))
        if unknown:
            raise ValueError(f"data.holdout_methods: no fake videos of {unknown}; the fake methods here are "
                             f"{sorted(set(fakes['method']))}")
        untested = sorted(set(holdout_methods) - set(fakes.loc[fakes["split"] == "test", "method"]))
        if untested:
            raise ValueError(f"data.holdout_methods: {untested} has no test videos, so its generalisation "
                             f"cannot be measured")
        drop = df["method"].isin(holdout_methods) & (df["label"].astype(int) == 1) & (df["split"] != "test")
        df = df[~drop].reset_index(drop=True)
    if train_identities is not None:
        df = keep_train_identities(df, int(train_identities), seed)
    return df[list(MANIFEST_COLUMNS)]


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV, keeping ids as strings ("000" stays "000") and checking its columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (run `python -m pipeline.manifest`)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: manifest is missing columns {missing} "
                         f"(expected {list(MANIFEST_COLUMNS)}, found {list(df.columns)})")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"{path}: unknown split values {bad} (allowed: {list(SPLITS)})")
    dup = df.duplicated(list(VIDEO_KEY_COLUMNS))
    if dup.any():
        raise ValueError(f"{path}: repeated (dataset, method, video_id): "
                         f"{df.loc[dup, list(VIDEO_KEY_COLUMNS)].head(3).values.tolist()}")
    return df.astype({"label": "int64", "size_bytes": "int64"})


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Write the manifest atomically: a temp file in the same folder, then ``os.replace``."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write manifest {path}: missing columns {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        df[list(MANIFEST_COLUMNS)].to_csv(f, index=False)
