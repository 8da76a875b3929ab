"""FaceForensics++ adapter (``type: ffpp``).

Layout under ``root``::

    original_sequences/youtube/<compression>/videos/000.mp4            real, method "original"
    original_sequences/actors/<compression>/videos/01__exit_phone_room.mp4   real, method "actors"
    manipulated_sequences/<Method>/<compression>/videos/<target>_<source>.mp4
    manipulated_sequences/DeepFakeDetection/<compression>/videos/01_02__exit_phone_room__YVGY8LOK.mp4
    train.json / val.json / test.json   (or splits/train.json ...): lists of [a, b] id pairs

Split rules (official protocol): a real video ``i`` takes the split of the pair containing ``i``;
a fake ``t_s`` takes the split of the pair {t, s}. Videos in no pair are dropped (a warning gives
the count). ``identity`` is the target id (the id itself for reals), ``source_id`` the source id.

DeepFakeDetection (only when listed in ``methods``; adds the ``actors`` originals) has no official
split: its 28 actors are split by person with the seeded group split (spec.val_fraction,
spec.test_fraction); a fake whose target and source actors fall in different splits is dropped
(warned), so no actor is in two splits. Actor ids are stored as ``actorNN`` to keep them apart from
the YouTube ids ``000``-``999``.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from pipeline.params import DatasetSpec
from .common import SPLITS, list_videos, make_row, read_json, require_dir, rows_to_frame
from .splits import assign_group_splits

__all__ = ["DEFAULT_METHODS", "load_official_splits", "folders_looked_in", "build_ffpp"]

DEFAULT_METHODS: tuple[str, ...] = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
DFD = "DeepFakeDetection"
_PAIR_NAME = re.compile(r"^(\d+)_(\d+)$")
_DFD_FAKE = re.compile(r"^(\d+)_(\d+)__")
_DFD_REAL = re.compile(r"^(\d+)__")


def _split_file(root: Path, split: str) -> Path:
    """``root/<split>.json`` or ``root/splits/<split>.json``; a clear error when neither exists."""
    for cand in (root / f"{split}.json", root / "splits" / f"{split}.json"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"FF++ split file '{split}.json' not found in {root} or {root / 'splits'} "
        "(the official train/val/test.json lists of [target, source] pairs are required)")


def load_official_splits(root: Path) -> tuple[dict[str, str], dict[frozenset, str]]:
    """Read the official split files: (id -> split, frozenset{a, b} -> split).

    Raises ``ValueError`` naming the id when one id is listed in two different splits.
    """
    id_split: dict[str, str] = {}
    pair_split: dict[frozenset, str] = {}
    clashes: dict[str, set[str]] = {}
    for split in SPLITS:
        path = _split_file(root, split)
        for pair in read_json(path):
            ids = [str(x) for x in pair]
            pair_split[frozenset(ids)] = split
            for i in ids:
                if id_split.setdefault(i, split) != split:
                    clashes.setdefault(i, {id_split[i]}).add(split)
    if clashes:
        named = ", ".join(f"'{i}' in {sorted(s)}" for i, s in sorted(clashes.items()))
        raise ValueError(f"FF++ split files in {root} leak: id listed in more than one split: {named}")
    return id_split, pair_split


def _videos_dir(root: Path, group: str, name: str, compression: str) -> Path:
    return root / group / name / compression / "videos"


def _youtube_rows(spec: DatasetSpec, root: Path, id_split: dict[str, str]) -> tuple[list[dict], int]:
    """Real YouTube originals; returns (rows, number dropped for lack of a split)."""
    folder = require_dir(_videos_dir(root, "original_sequences", "youtube", spec.compression),
                         "FF++ original videos", spec.name)
    rows, dropped = [], 0
    for p in list_videos(folder):
        split = "test" if spec.test_only else id_split.get(p.stem)
        if split is None:
            dropped += 1
            continue
        rows.append(make_row(spec.name, "original", p.stem, p, 0, split, identity=p.stem))
    return rows, dropped


def _method_rows(spec: DatasetSpec, root: Path, method: str, pair_split: dict[frozenset, str],
                 explicit: bool) -> tuple[list[dict], int]:
    """Fakes ``<target>_<source>.mp4`` of one manipulation method."""
    folder = _videos_dir(root, "manipulated_sequences", method, spec.compression)
    if not folder.is_dir():
        if explicit:
            require_dir(folder, f"FF++ method '{method}'", spec.name)
        warnings.warn(f"dataset '{spec.name}': FF++ method folder missing, skipped: {folder}")
        return [], 0
    rows, dropped = [], 0
    for p in list_videos(folder):
        m = _PAIR_NAME.match(p.stem)
        if m is None:
            raise ValueError(f"dataset '{spec.name}': FF++ fake not named <target>_<source>: {p}")
        target, source = m.groups()
        split = "test" if spec.test_only else pair_split.get(frozenset((target, source)))
        if split is None:
            dropped += 1
            continue
        rows.append(make_row(spec.name, method, p.stem, p, 1, split, identity=target, source_id=source))
    return rows, dropped


def _dfd_rows(spec: DatasetSpec, root: Path, seed: int) -> tuple[list[dict], int]:
    """DeepFakeDetection fakes and the ``actors`` originals, split by actor (see module doc)."""
    real_dir = require_dir(_videos_dir(root, "original_sequences", "actors", spec.compression),
                           "FF++ actors (DeepFakeDetection originals)", spec.name)
    fake_dir = require_dir(_videos_dir(root, "manipulated_sequences", DFD, spec.compression),
                           f"FF++ method '{DFD}'", spec.name)
    reals, fakes = [], []
    for p in list_videos(real_dir):
        m = _DFD_REAL.match(p.stem)
        if m is None:
            raise ValueError(f"dataset '{spec.name}': actors video not named NN__scene: {p}")
        reals.append((p, f"actor{m.group(1)}"))
    for p in list_videos(fake_dir):
        m = _DFD_FAKE.match(p.stem)
        if m is None:
            raise ValueError(f"dataset '{spec.name}': {DFD} video not named NN_MM__scene__ID: {p}")
        fakes.append((p, f"actor{m.group(1)}", f"actor{m.group(2)}"))
    actors = {a for _, a in reals} | {a for _, a, _ in fakes} | {s for _, _, s in fakes}
    actor_split = ({a: "test" for a in actors} if spec.test_only else
                   assign_group_splits(actors, spec.val_fraction, spec.test_fraction, seed, f"{spec.name}/{DFD}"))
    rows = [make_row(spec.name, "actors", p.stem, p, 0, actor_split[a], identity=a) for p, a in reals]
    dropped = 0
    for p, target, source in fakes:
        if actor_split[target] != actor_split[source]:
            dropped += 1
            continue
        rows.append(make_row(spec.name, DFD, p.stem, p, 1, actor_split[target], identity=target, source_id=source))
    return rows, dropped


def folders_looked_in(spec: DatasetSpec) -> list[str]:
    """The video folders this spec reads, each marked "(missing)" when absent, plus the compressions on disk
    (for the error when a split ends up with no real or no fake video)."""
    root = Path(spec.root)
    methods = list(spec.methods) if spec.methods is not None else list(DEFAULT_METHODS)
    folders = [_videos_dir(root, "original_sequences", "youtube", spec.compression)]
    folders += [_videos_dir(root, "manipulated_sequences", m, spec.compression) for m in methods]
    out = [f"{f}{'' if f.is_dir() else ' (missing)'}" for f in folders]
    present = sorted({p.parent.name for p in root.glob("*_sequences/*/*/videos") if p.is_dir()})
    return out + [f"compressions present under {root}: {', '.join(present) or 'none'}"]


def build_ffpp(spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Manifest rows of one FaceForensics++ dataset (see the module docstring for the rules)."""
    root = Path(spec.root)
    explicit = spec.methods is not None
    methods = list(spec.methods) if explicit else list(DEFAULT_METHODS)
    id_split, pair_split = ({}, {}) if spec.test_only else load_official_splits(root)
    rows, dropped = _youtube_rows(spec, root, id_split)
    for method in methods:
        if method == DFD:
            more, d = _dfd_rows(spec, root, seed)
        else:
            more, d = _method_rows(spec, root, method, pair_split, explicit)
        rows += more
        dropped += d
    if dropped:
        warnings.warn(f"dataset '{spec.name}': {dropped} FF++ videos are in no official split "
                      "(or pair actors across splits) and were dropped")
    return rows_to_frame(rows)
