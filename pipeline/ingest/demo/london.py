"""The Face Research Lab London Set, vendored in ``pipeline/ingest/demo/london/`` (CC BY 4.0).

102 consenting adults, each with a neutral and a smiling front photo (450 x 450 px) and a 189-point
template of the neutral photo; ``people.csv`` gives each person's age, gender and ethnicity.

> DeBruine, L., & Jones, B. (2017). Face Research Lab London Set (Version 5). figshare.
> https://doi.org/10.6084/m9.figshare.5047666.v5 (CC BY 4.0). Downscaled to 450 x 450 px.

Every file is checked against ``london/SHA256SUMS`` before use, and that list itself against the SHA-256
pinned here (:data:`SUMS_SHA256`), as :mod:`pipeline.ingest.demo.sources` checks its registry media.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from pipeline.runtime import sha256_file as file_sha256

from .sources import SourceError

__all__ = ["LONDON_DIR", "SUMS_SHA256", "Person", "people", "verify", "read_template", "PREFIX",
           "ATTRIBUTION"]

LONDON_DIR = Path(__file__).resolve().parent / "london"
SUMS_SHA256 = "9800350244f783d78dc3c11dff506b6fb4d1364e5b0cbcbd9641df92e272e3a1"
PREFIX = "london_"   # identity = PREFIX + the set's face id ("london_001")
ATTRIBUTION = ("DeBruine, L., & Jones, B. (2017). Face Research Lab London Set (Version 5). figshare. "
               "https://doi.org/10.6084/m9.figshare.5047666.v5 (CC BY 4.0). Downscaled to 450 x 450 px.")


@dataclass(frozen=True)
class Person:
    face_id: str        # "001"
    age: Optional[int]   # None where the set gives "NA"
    gender: str
    ethnicity: str
    neutral: Path
    smiling: Path
    template: Path

    @property
    def identity(self) -> str:
        return PREFIX + self.face_id


def _sums(root: Path, pinned: str) -> dict[str, str]:
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        raise SourceError(f"{sums} is missing: the vendored London set is incomplete (restore it with git checkout)")
    got = file_sha256(sums)
    if got != pinned:
        raise SourceError(f"{sums}: SHA-256 {got} does not match the pinned {SUMS_SHA256}; refusing to use it "
                          "(restore the file with git checkout)")
    out = {}
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.strip()] = digest
    return out


def verify(paths: Iterable[Path], root: Path = LONDON_DIR, pinned: str = SUMS_SHA256) -> None:
    """Check each file's SHA-256 against ``root/SHA256SUMS`` (whose own SHA-256 must be ``pinned``); a
    missing or changed file is an error naming it."""
    sums = _sums(Path(root).resolve(), pinned)
    for p in paths:
        rel = Path(p).resolve().relative_to(Path(root).resolve()).as_posix()
        if rel not in sums:
            raise SourceError(f"{p}: not listed in {root / 'SHA256SUMS'}")
        if not Path(p).is_file():
            raise SourceError(f"{p}: missing from the vendored London set (restore it with git checkout)")
        got = file_sha256(p)
        if got != sums[rel]:
            raise SourceError(f"{p}: SHA-256 {got} does not match SHA256SUMS ({sums[rel]}); refusing to use it")


def people(root: Path = LONDON_DIR, ids: Optional[Iterable[str]] = None, pinned: str = SUMS_SHA256) -> list[Person]:
    """The people of the set (all, or those whose face id is in ``ids``), in id order; ``people.csv`` is
    verified here, each person's files by :func:`verify` before use."""
    root = Path(root)
    table = root / "people.csv"
    verify([table], root, pinned)
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    want = None if ids is None else {str(i).zfill(3) for i in ids}
    out = []
    for r in rows:
        fid = r["face_id"].zfill(3)
        if want is not None and fid not in want:
            continue
        p = Person(fid, (int(r["face_age"]) if r["face_age"].strip().isdigit() else None), r["face_gender"], r["face_eth"], root / "neutral" / f"{fid}.jpg",
                   root / "smiling" / f"{fid}.jpg", root / "landmarks" / "neutral" / f"{fid}.tem")
        out.append(p)
    if want is not None and len(out) != len(want):
        missing = sorted(want - {p.face_id for p in out})
        raise SourceError(f"demo.london: unknown London face ids {missing[:10]} (see {table})")
    return sorted(out, key=lambda p: p.face_id)


def read_template(path: Path) -> np.ndarray:
    """The points of a WebMorph/Psychomorph ``.tem`` file: [P, 2] float64 pixel (x, y)."""
    lines = Path(path).read_text().splitlines()
    n = int(lines[0].strip())
    pts = np.array([[float(v) for v in ln.split()[:2]] for ln in lines[1:1 + n]], np.float64)
    if pts.shape != (n, 2):
        raise SourceError(f"{path}: expected {n} points, read {pts.shape[0]}")
    return pts
