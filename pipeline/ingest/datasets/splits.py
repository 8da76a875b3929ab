"""Seeded, group-aware train/val/test assignment and the leak check run on every manifest.

The split unit is a *group* (a person, or a source video with all its fakes): every video of a
group lands in the same split, so no face (or no source clip) is seen in training and again in
validation or test.
"""
from __future__ import annotations

import math
import zlib
from collections import defaultdict
from typing import Hashable, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

__all__ = ["split_counts", "assign_group_splits", "check_leaks"]

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


def check_leaks(df: pd.DataFrame, dataset_types: Optional[Mapping[str, str]] = None) -> None:
    """Raise ``ValueError`` naming the offending ids and splits if the manifest leaks.

    Always: a (dataset, method, video_id) key appears once; a file path is in one split only;
    a non-empty ``identity`` is not in train and in val/test of the same dataset.
    By ``dataset_types[name]``:

    * ``ffpp``: every target id (``identity``) and source id (``source_id``) is in one split.
    * ``celebdf``: identities may be shared between train and **test**, because the test set is
      the authors' fixed ``List_of_testing_videos.txt`` (official protocol; its people also appear
      in the remaining videos). Train and val must still be identity-disjoint.
    * ``dfdc``: a fake and its original video (``source_id``) are in the same split.
    """
    types = dict(dataset_types or {})
    errors = _check_keys(df) + _check_paths(df)
    for name, sub in df.groupby("dataset", sort=True):
        kind = types.get(str(name), "")
        errors += _check_identity(sub, str(name), official_test=(kind == "celebdf"))
        if kind == "ffpp":
            errors += _check_ffpp_ids(sub, str(name))
        if kind == "dfdc":
            errors += _check_source_groups(sub, str(name))
    if errors:
        raise ValueError("manifest leak check failed:\n  - " + "\n  - ".join(errors))
