"""DFDC adapter (``type: dfdc``).

Layout under ``root``::

    dfdc_train_part_*/metadata.json   {"x.mp4": {"label": "FAKE"|"REAL", "original": "y.mp4"|null, ...}}
    dfdc_train_part_*/x.mp4
    test/labels.csv                   columns filename,label   (optional)
    test/<filename>

Videos on disk that no metadata.json or labels.csv lists are dropped with a warning (count and examples).
Methods are ``real`` and ``fake`` (DFDC does not name the manipulation). ``source_id`` of a fake is
the stem of its original; ``identity`` is empty (DFDC publishes no person ids).

Split rules: a fake and its original form one group (group = original's stem, or the video's own
stem for a real); validation is carved from the training parts by group (seeded,
``spec.val_fraction``), so a fake and its original always share a split. Every video of ``test/``
is test. Assumption: in ``test/labels.csv`` label 1 = FAKE, 0 = REAL, as in the public DFDC test set
labels (the paper notes give no polarity). Without a ``test/`` folder a test part is carved by
group too (``spec.test_fraction``) and a warning says so.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pandas as pd

from pipeline.params import DatasetSpec
from .common import list_videos, make_row, read_json
from .splits import finish_rows

__all__ = ["TEST_DIR", "build_dfdc"]

TEST_DIR = "test"
_LABELS = {"REAL": 0, "FAKE": 1}
_EXAMPLES = 5  # unlisted videos named in the warning


def _unlisted(folder: Path, listed: set[str]) -> list[Path]:
    """Videos on disk in ``folder`` that its metadata/labels file does not list."""
    return [p for p in list_videos(folder) if p.name not in listed]


def _part_rows(spec: DatasetSpec, part: Path) -> tuple[list[dict], int, list[Path]]:
    """Rows of one ``dfdc_train_part_*`` folder (split still empty); also the count of missing files and the
    videos on disk its metadata.json does not list."""
    meta_path = part / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"dataset '{spec.name}': DFDC metadata not found: {meta_path}")
    rows, missing = [], 0
    meta = read_json(meta_path, spec.name)
    for name, info in sorted(meta.items()):
        label = _LABELS.get(str(info.get("label", "")).upper())
        if label is None:
            raise ValueError(f"{meta_path}: {name}: label must be FAKE or REAL, got {info.get('label')!r}")
        path = part / name
        if not path.is_file():
            missing += 1
            continue
        source = Path(info["original"]).stem if label and info.get("original") else ""
        rows.append(make_row(spec.name, "fake" if label else "real", path.stem, path, label, source_id=source))
    return rows, missing, _unlisted(part, set(meta))


def _test_rows(spec: DatasetSpec, folder: Path) -> tuple[list[dict], int, list[Path]]:
    """Rows of ``test/labels.csv`` (label 1 = fake), all split "test"; also the count of missing files and the
    videos on disk the labels file does not list."""
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"dataset '{spec.name}': DFDC test labels not found: {labels}")
    rows, missing, listed = [], 0, set()
    with labels.open(newline="") as f:
        for rec in csv.DictReader(f):
            listed.add(rec["filename"])
            label = int(float(rec["label"]))
            if label not in (0, 1):
                raise ValueError(f"{labels}: {rec['filename']}: label must be 0 or 1, got {rec['label']!r}")
            path = folder / rec["filename"]
            if not path.is_file():
                missing += 1
                continue
            rows.append(make_row(spec.name, "fake" if label else "real", path.stem, path, label, "test"))
    return rows, missing, _unlisted(folder, listed)


def build_dfdc(spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Manifest rows of one DFDC dataset (see the module docstring for the rules)."""
    root = Path(spec.root)
    parts = sorted(p for p in root.glob("dfdc_train_part_*") if p.is_dir())
    train_rows, missing, unlisted = [], 0, []
    for part in parts:
        more, m, u = _part_rows(spec, part)
        train_rows += more
        missing += m
        unlisted += u
    test_rows: list[dict] = []
    has_test = (root / TEST_DIR).is_dir()
    if has_test:
        test_rows, m, u = _test_rows(spec, root / TEST_DIR)
        missing += m
        unlisted += u
    if unlisted:
        shown = ", ".join(p.relative_to(root).as_posix() for p in unlisted[:_EXAMPLES])
        more = f" and {len(unlisted) - _EXAMPLES} more" if len(unlisted) > _EXAMPLES else ""
        warnings.warn(f"dataset '{spec.name}': {len(unlisted)} DFDC videos on disk are in no metadata.json or "
                      f"{TEST_DIR}/labels.csv, dropped: {shown}{more}")
    if not parts and not has_test:
        raise FileNotFoundError(f"dataset '{spec.name}': no dfdc_train_part_* or {TEST_DIR}/ folder in {root}")
    if missing:
        warnings.warn(f"dataset '{spec.name}': {missing} DFDC videos listed but not on disk, skipped")
    if not has_test and not spec.test_only:
        warnings.warn(f"dataset '{spec.name}': no {TEST_DIR}/ folder; carving a test part from the "
                      f"training parts by original video (test_fraction={spec.test_fraction})")
    # training rows by original video (source id), so a fake and its original share a split
    return finish_rows(train_rows + test_rows, spec, seed, lambda r: r["source_id"] or r["video_id"],
                       0.0 if has_test else spec.test_fraction)
