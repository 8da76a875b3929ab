"""``mrl detect``, the output: one JSON for all videos or a folder of per-video JSON files, and a CSV summary;
checked before any scoring so that no work is lost to an unusable ``--out`` and no file is replaced unasked
(:func:`existing_outputs`: what a run would replace, refused by ``mrl detect`` without ``--overwrite``)."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from pipeline.runtime import write_csv, write_json

__all__ = ["SUMMARY_COLUMNS", "HEATMAP_FILE", "write_outputs", "output_problem", "planned_outputs", "existing_outputs"]

#: the names of the heatmap PNGs (pipeline.scoring.detect.detection.write_heatmaps): w<window>_s<snippet>_f<frame>.png
HEATMAP_FILE = re.compile(r"^w(\d+)_s(\d+)_f(\d+)\.png$")
SUMMARY_COLUMNS = ["name", "video", "status", "score", "decision", "threshold", "n_windows", "frames_used",
                   "frames_read", "reason"]


def _json_safe(o):
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_json_safe(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_outputs(result: dict, out: str | Path) -> dict:
    """``out`` ending in ``.json``: one JSON with every video, and ``<out stem>.csv`` beside it. Otherwise a
    folder: ``<name>.json`` per video, ``detections.json`` (all) and ``summary.csv``. Returns the paths."""
    out = Path(out)
    header = {k: v for k, v in result.items() if k not in ("videos", "totals")}
    paths: dict[str, Any] = {}
    if out.suffix.lower() == ".json":
        write_json(_json_safe(result), out)
        paths["json"] = str(out)
        csv = out.with_suffix(".csv")
    else:
        out.mkdir(parents=True, exist_ok=True)
        per = []
        for e in result["videos"]:
            p = out / f"{e['name']}.json"
            write_json(_json_safe({**header, **e}), p)
            per.append(str(p))
        write_json(_json_safe(result), out / "detections.json")
        paths.update(json=str(out / "detections.json"), per_video=per)
        csv = out / "summary.csv"
    write_csv(pd.DataFrame([{k: e.get(k) for k in SUMMARY_COLUMNS} for e in result["videos"]],
                           columns=SUMMARY_COLUMNS), csv)
    paths["csv"] = str(csv)
    return paths


def output_problem(out: str | Path) -> Optional[str]:
    """Why ``--out`` cannot take the results (checked BEFORE any scoring, so no work is lost), or None."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        if out.is_dir():
            return f"--out {out} is a folder; a .json output must be a file path"
        parent = out.parent
    else:
        if out.exists() and not out.is_dir():
            return (f"--out {out} is an existing file; give a folder (per-video JSON + summary.csv) or a path "
                    f"ending in .json")
        parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        return f"--out {out}: cannot write under {parent}"
    return None


def planned_outputs(out: str | Path, names: Sequence[str], heatmap_dir: Optional[str | Path] = None
                    ) -> tuple[list[Path], list[Path]]:
    """The files a run scoring videos named ``names`` writes for ``--out`` (:func:`write_outputs`), and its
    heatmap folders (``<heatmap_dir>/<name>/``)."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        files = [out, out.with_suffix(".csv")]
    else:
        files = [out / f"{n}.json" for n in names] + [out / "detections.json", out / "summary.csv"]
    dirs = [Path(heatmap_dir) / n for n in names] if heatmap_dir is not None else []
    return files, dirs


def existing_outputs(out: str | Path, names: Sequence[str], heatmap_dir: Optional[str | Path] = None
                     ) -> list[Path]:
    """What that run would replace, i.e. what it did not write itself: its output files that exist already
    (a link too, broken or not) and its heatmap folders that hold anything."""
    files, dirs = planned_outputs(out, names, heatmap_dir)
    hit = [f for f in files if f.exists() or f.is_symlink()]
    return hit + [d for d in dirs if d.is_symlink() or (d.exists() and (not d.is_dir() or any(d.iterdir())))]
