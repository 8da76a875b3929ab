"""Seeded, group-aware train/val/test assignment and the leak check run on every manifest.

The split unit is a *group* (a person, or a source video with all its fakes): every video of a
group lands in the same split, so no face (or no source clip) is seen in training and again in
validation or test.
"""
from __future__ import annotations

import math
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Callable, Hashable, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.errors import InputRefused
from pipeline.runtime import sha256_file

from .common import rows_to_frame

__all__ = ["split_counts", "assign_group_splits", "finish_rows", "check_leaks"]

_MAX_NAMED = 10


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Numbers of groups (train, val, test) for ``n`` groups.

    Each held-out part gets ``floor(n * fraction + 0.5)`` groups, at least one when its fraction
    is positive and ``n >= 3``; at least one group always stays in train (val shrinks first).
    Examples: n=5, 0.15/0.2 -> (3, 1, 1); n=2 -> (2, 0, 0); n=10 -> (6, 2, 2).
    """
    def part(f: float) -> int:
        k = int(math.floor(n * f + 0.5)) if f > 0 else 0
        return max(k, 1) if f > 0 and n >= 3 else k

    n_val, n_test = part(val_fraction), part(test_fraction)
    while n > 0 and n - n_val - n_test < 1:
        if n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _rng(seed: int, salt: str) -> np.random.Generator:
    """A generator fixed by (seed, salt): datasets with different names get different draws."""
    return np.random.default_rng([int(seed), zlib.crc32(salt.encode())])


def assign_group_splits(groups: Iterable[Hashable], val_fraction: float, test_fraction: float,
                        seed: int, salt: str = "", strata: Optional[Mapping[Hashable, str]] = None,
                        ) -> dict[Hashable, str]:
    """Map each distinct group to "train"/"val"/"test", reproducibly for a given ``seed``.

    Groups are sorted, shuffled by a generator seeded with (seed, salt) and cut with
    :func:`split_counts`. With ``strata`` (group -> stratum, e.g. the method of a video) each
    stratum is cut separately, so every method is represented in every split.
    """
    unique = sorted(set(groups), key=str)
    by_stratum: dict[str, list] = defaultdict(list)
    for g in unique:
        by_stratum[strata[g] if strata is not None else ""].append(g)
    rng = _rng(seed, salt)
    out: dict[Hashable, str] = {}
    for stratum in sorted(by_stratum):
        members = by_stratum[stratum]
        order = rng.permutation(len(members))
        n_train, n_val, n_test = split_counts(len(members), val_fraction, test_fraction)
        for rank, idx in enumerate(order):
            out[members[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def finish_rows(rows: list[dict], spec, seed: int, group: Callable[[dict], Hashable], test_fraction: float,
                stratify: bool = False) -> pd.DataFrame:
    """How every adapter ends: a ``test_only`` dataset is all test; otherwise each row without a split yet gets
    train/val (and test, ``test_fraction``) by its ``group(row)`` (:func:`assign_group_splits`, seeded by
    ``seed`` and the dataset's name; stratified by method when ``stratify``). Returns the manifest frame."""
    if spec.test_only:
        for r in rows:
            r["split"] = "test"
        return rows_to_frame(rows)
    todo = [r for r in rows if not r["split"]]
    keys = {id(r): group(r) for r in todo}
    strata = {keys[id(r)]: r["method"] for r in todo} if stratify else None
    assign = assign_group_splits(keys.values(), spec.val_fraction, test_fraction, seed, spec.name, strata=strata)
    for r in todo:
        r["split"] = assign[keys[id(r)]]
    return rows_to_frame(rows)


# ----------------------------------------------------------------------------- leak check
def _name(items: Mapping[str, Sequence[str]]) -> str:
    """'id' in [splits], ... for at most _MAX_NAMED offenders."""
    shown = [f"'{k}' in {sorted(v)}" for k, v in sorted(items.items())[:_MAX_NAMED]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _splits_per_value(df: pd.DataFrame, column: str) -> dict[str, set[str]]:
    """value -> set of splits, ignoring empty values."""
    sub = df[df[column].astype(str) != ""]
    return {str(k): set(v) for k, v in sub.groupby(column)["split"]}


def _check_keys(df: pd.DataFrame) -> list[str]:
    """Every (dataset, method, video_id) key appears once."""
    keys = {f"{d}/{m}/{v}": list(g["split"]) for (d, m, v), g in df.groupby(["dataset", "method", "video_id"])
            if len(g) > 1}
    return [f"(dataset, method, video_id) listed more than once: {_name(keys)}"] if keys else []


def _check_paths(df: pd.DataFrame) -> list[str]:
    bad = {p: s for p, s in _splits_per_value(df, "path").items() if len(s) > 1}
    return [f"file path in more than one split: {_name(bad)}"] if bad else []


def _check_identity(sub: pd.DataFrame, name: str, official_test: bool) -> list[str]:
    """An identity in train may not be in val (nor in test, unless the test list is official)."""
    held_out = {"val"} if official_test else {"val", "test"}
    bad = {i: s for i, s in _splits_per_value(sub, "identity").items() if "train" in s and s & held_out}
    return [f"dataset '{name}': identity in train and {'/'.join(sorted(held_out))}: {_name(bad)}"] if bad else []


def _check_ffpp_ids(sub: pd.DataFrame, name: str) -> list[str]:
    """FF++: every target or source id belongs to exactly one split."""
    ids: dict[str, set[str]] = defaultdict(set)
    for col in ("identity", "source_id"):
        for k, s in _splits_per_value(sub, col).items():
            ids[k] |= s
    bad = {k: s for k, s in ids.items() if len(s) > 1}
    return [f"dataset '{name}': FF++ target/source id in more than one split: {_name(bad)}"] if bad else []


def _check_source_groups(sub: pd.DataFrame, name: str) -> list[str]:
    """DFDC: a fake and its original (group = source_id, or the video itself) share a split."""
    group = sub["source_id"].where(sub["source_id"].astype(str) != "", sub["video_id"])
    bad = {str(k): set(v) for k, v in sub.groupby(group)["split"] if len(set(v)) > 1}
    return [f"dataset '{name}': original video and its fakes in different splits: {_name(bad)}"] if bad else []


def _check_across_datasets(df: pd.DataFrame, types: Mapping[str, str]) -> list[str]:
    """An identity or source id shared by two datasets of one type (e.g. one FF++ configured twice, at c23 to
    train and at c40 as ``test_only``) is in one split across them."""
    where: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for col in ("identity", "source_id"):
        sub = df[df[col].astype(str) != ""]
        for name, value, split in zip(sub["dataset"], sub[col], sub["split"]):
            where[(types.get(str(name), ""), str(value))].add((str(name), str(split)))
    bad = {f"{t}:{v}" if t else v: {f"{d}/{s}" for d, s in places} for (t, v), places in where.items()
           if len({d for d, _ in places}) > 1 and len({s for _, s in places}) > 1}
    return [f"identity or source id in two datasets and different splits: {_name(bad)}"] if bad else []


def _check_identical_files(df: pd.DataFrame) -> list[str]:
    """No two files with the same bytes in different splits. Cheap: only files whose size (``size_bytes``)
    is shared by rows of different splits are hashed (distinct video sizes rarely coincide); rows whose file
    is not on disk are not hashed."""
    digests: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for _, group in df.groupby("size_bytes"):
        if group["split"].nunique() < 2:
            continue
        for path, split in zip(group["path"], group["split"]):
            if Path(path).is_file():
                digests[sha256_file(path)].add((str(path), str(split)))
    bad = [sorted(v) for v in digests.values() if len({s for _, s in v}) > 1]
    return [f"byte-identical files in different splits: " + " and ".join(f"{p} ({s})" for p, s in pair)
            for pair in sorted(bad)[:_MAX_NAMED]]


def check_leaks(df: pd.DataFrame, dataset_types: Optional[Mapping[str, str]] = None) -> None:
    """Raise :class:`~pipeline.errors.InputRefused` (a ``ValueError``) naming the offending ids and splits if the
    manifest leaks.

    Always: a (dataset, method, video_id) key appears once; a file path is in one split only;
    a non-empty ``identity`` is not in train and in val/test of the same dataset.
    By ``dataset_types[name]``:

    * ``ffpp``: every target id (``identity``) and source id (``source_id``) is in one split.
    * ``celebdf``: identities may be shared between train and **test**, because the test set is
      the authors' fixed ``List_of_testing_videos.txt`` (official protocol; its people also appear
      in the remaining videos). Train and val must still be identity-disjoint.
    * ``dfdc``: a fake and its original video (``source_id``) are in the same split.

    Across datasets: an identity or source id shared by datasets of the same type is in one split, and no
    two files with the same bytes (SHA-256) are in different splits, whatever their names.
    """
    types = dict(dataset_types or {})
    errors = _check_keys(df) + _check_paths(df) + _check_across_datasets(df, types) + _check_identical_files(df)
    for name, sub in df.groupby("dataset", sort=True):
        kind = types.get(str(name), "")
        errors += _check_identity(sub, str(name), official_test=(kind == "celebdf"))
        if kind == "ffpp":
            errors += _check_ffpp_ids(sub, str(name))
        if kind == "dfdc":
            errors += _check_source_groups(sub, str(name))
    if errors:
        raise InputRefused("manifest leak check failed:\n  - " + "\n  - ".join(errors),
                           fix="each video once and in one split: remove or move the duplicate files named above "
                               "(a video saved twice, as x.mp4 and x.avi, or copied into another split), or "
                               "correct the split file, then run again")
