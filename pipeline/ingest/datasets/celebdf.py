"""Celeb-DF v2 adapter (``type: celebdf``).

Layout under ``root``::

    Celeb-real/id0_0000.mp4            real, method "Celeb-real",   identity "id0"
    Celeb-synthesis/id0_id16_0000.mp4  fake, method "Celeb-synthesis", identity "id0", source_id "id16"
    YouTube-real/00000.mp4             real, method "YouTube-real", no identity
    List_of_testing_videos.txt         lines "<label> <relpath>", label 1 = REAL, 0 = FAKE (inverted!)

Split rules:

* Every video of the official test list is ``test`` and nothing else is (the authors' protocol).
  The people of the test list also appear in the other videos, so identities are shared between
  train and test *by the official protocol*; the leak check allows exactly that for Celeb-DF.
* Validation is carved from the remaining videos by identity (seeded, ``spec.val_fraction``);
  ``spec.test_fraction`` is not used. Rule for a fake ``idA_idB_NNNN`` (B's face pasted onto A's
  video ``idA_NNNN``): it belongs to the **target** A, whose video, head, hair and background it
  shows, so it is grouped with A's real videos; ``source_id`` records B. Train and val are
  therefore identity-disjoint on the ``identity`` column. Caveat (documented, not enforced):
  B's synthesised face may occur in a training fake while B's own videos are in val.
* YouTube-real videos have no known identity: each video is its own group.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from pipeline.params import DatasetSpec
from .common import list_videos, make_row
from .splits import finish_rows

__all__ = ["TEST_LIST", "read_test_list", "build_celebdf"]

TEST_LIST = "List_of_testing_videos.txt"
_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
_REAL_NAME = re.compile(r"^(id\d+)_\d+$")
_FAKE_NAME = re.compile(r"^(id\d+)_(id\d+)_\d+$")


def read_test_list(root: Path) -> dict[str, int]:
    """``relpath -> label`` (0 real, 1 fake) from the official list, whose own label is 1 = real."""
    path = root / TEST_LIST
    if not path.is_file():
        raise FileNotFoundError(f"Celeb-DF test list not found: {path}")
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected '<0|1> <relpath>', got {line!r}")
        out[Path(parts[1]).as_posix()] = 1 - int(parts[0])
    return out


def _parse(spec: DatasetSpec, folder: str, path: Path) -> tuple[str, str]:
    """(identity, source_id) from a file name."""
    if folder == "YouTube-real":
        return "", ""
    m = (_FAKE_NAME if folder == "Celeb-synthesis" else _REAL_NAME).match(path.stem)
    if m is None:
        raise ValueError(f"dataset '{spec.name}': unexpected Celeb-DF file name: {path}")
    return m.group(1), (m.group(2) if folder == "Celeb-synthesis" else "")


def build_celebdf(spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Manifest rows of one Celeb-DF v2 dataset (see the module docstring for the rules)."""
    root = Path(spec.root)
    test_list = read_test_list(root)
    rows, seen = [], set()
    for folder, label in _FOLDERS.items():
        for p in list_videos(root / folder):
            rel = f"{folder}/{p.name}"
            seen.add(rel)
            if rel in test_list and test_list[rel] != label:
                raise ValueError(f"{root / TEST_LIST}: label of {rel} is {1 - test_list[rel]} "
                                 f"(1 = real) but the folder says {'fake' if label else 'real'}")
            identity, source = _parse(spec, folder, p)
            split = "test" if rel in test_list else ""
            rows.append(make_row(spec.name, folder, p.stem, p, label, split, identity, source))
    missing = sorted(set(test_list) - seen)
    if missing:
        warnings.warn(f"dataset '{spec.name}': {len(missing)} videos of {TEST_LIST} not found, e.g. {missing[0]}")
    # the rest get train/val by identity group (YouTube-real: one group per video)
    return finish_rows(rows, spec, seed, lambda r: r["identity"] or f"{r['method']}/{r['video_id']}", 0.0)
