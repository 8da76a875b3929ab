"""What the crop stage reports: ``index.csv`` (one row per window) and ``report.json`` (per-video reports and
totals) built from the per-video files, files of videos no longer in the manifest pruned, and what a run did
(``<out_dir>.run.json``) and each shard did (``<out_dir>.shard-i-of-n.json``) beside the folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd

from pipeline.ingest.cropping.identity import RUN_FIELDS, output_path, read_report, row_signature
from pipeline.ingest.datasets import VIDEO_KEY_COLUMNS, read_manifest
from pipeline.runtime import write_text

__all__ = ["INDEX_COLUMNS", "load_manifest", "content_totals", "run_totals", "totals", "prune", "merge",
           "run_record_path", "shard_report_path"]

INDEX_COLUMNS = ["dataset", "method", "video_id", "label", "split", "identity", "file", "window"]
_KEY = list(VIDEO_KEY_COLUMNS)


def load_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest (checked by :func:`pipeline.ingest.datasets.read_manifest`) in the stable crop order."""
    return read_manifest(path).sort_values(_KEY, kind="stable").reset_index(drop=True)


def content_totals(videos: list[dict]) -> dict:
    """Totals of the crops themselves (``report.json``): the same whatever the run did."""
    return {
        "videos": len(videos),
        "videos_with_windows": sum(v.get("windows", 0) > 0 for v in videos),
        "skipped": sum(bool(v.get("skipped")) for v in videos),
        "windows": int(sum(v.get("windows", 0) for v in videos)),
        "frames_read": int(sum(v.get("frames_read", 0) for v in videos)),
        "frames_with_face": int(sum(v.get("frames_with_face", 0) for v in videos)),
    }


def run_totals(videos: list[dict]) -> dict:
    """Totals of what the run did (:func:`run_record_path`): videos computed and reused."""
    return {"computed": sum(v.get("status") == "computed" for v in videos),
            "cached": sum(v.get("status") == "cached" for v in videos)}


def totals(videos: list[dict]) -> dict:
    """Both, for the stage's summary line."""
    return {**content_totals(videos), **run_totals(videos)}


def prune(out_dir: str | Path, keep: set[Path]) -> int:
    """Delete the per-video files not in ``keep`` (videos no longer in the manifest) and folders left
    empty, so the output folder, kept between runs (``persist`` in dvc.yaml), holds exactly what a fresh
    run writes."""
    out_dir = Path(out_dir)
    gone = 0
    for p in sorted(out_dir.rglob("*.h5")):
        if p not in keep:
            p.unlink()
            gone += 1
    for d in sorted((d for d in out_dir.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    return gone


def merge(out_dir: str | Path, manifest: pd.DataFrame, phash: str,
          extra: Optional[list[dict]] = None) -> tuple[pd.DataFrame, dict]:
    """Build and write ``index.csv`` and ``report.json`` from the per-video files (+ :func:`shard_report_path`);
    per-video files of videos not in ``manifest`` are deleted (:func:`prune`)."""
    out_dir = Path(out_dir)
    known: dict[tuple, dict] = {}
    for sp in sorted(out_dir.parent.glob(f"{out_dir.name}.shard-*-of-*.json")):
        try:
            data = json.loads(sp.read_text())
        except Exception:
            continue
        if data.get("params_hash") != phash:
            continue
        for v in data.get("videos", []):
            known[tuple(v[k] for k in _KEY)] = v
    for v in extra or []:
        known[tuple(v[k] for k in _KEY)] = v
    index_rows, videos, outputs = [], [], set()
    for _, row in manifest.iterrows():
        key = tuple(str(row[k]) for k in _KEY)
        out = output_path(out_dir, row)
        outputs.add(out)
        rep = read_report(out, phash, row_signature(row))
        if rep is None:
            prev = known.get(key)
            rep = dict(prev) if prev else {**dict(zip(_KEY, key)), "path": str(row["path"]), "frames_read": 0,
                                            "frames_with_face": 0, "skipped": f"not processed: no crop of "
                                            f"{row['path']} for the current params"}
            rep["windows"] = 0
            rep.setdefault("status", "missing")
        else:
            rep["status"] = known.get(key, {}).get("status", "cached")
        videos.append(rep)
        rel = out.relative_to(out_dir).as_posix()
        for w in range(int(rep["windows"])):
            index_rows.append({"dataset": key[0], "method": key[1], "video_id": key[2], "label": int(row["label"]),
                               "split": str(row["split"]), "identity": str(row["identity"]), "file": rel,
                               "window": w})
    prune(out_dir, outputs)
    index = pd.DataFrame(index_rows, columns=INDEX_COLUMNS)
    report = {"params_hash": phash, "totals": totals(videos), "videos": videos}
    write_text(index.to_csv(index=False), out_dir / "index.csv")
    content = {"params_hash": phash, "totals": content_totals(videos),
               "videos": [{k: v for k, v in rep.items() if k not in RUN_FIELDS} for rep in videos]}
    write_text(json.dumps(content, indent=1, sort_keys=True), out_dir / "report.json")
    run = {"params_hash": phash, "totals": run_totals(videos),
           "seconds": round(sum(float(v.get("seconds") or 0.0) for v in videos if v.get("status") == "computed"), 3),
           "videos": [{**{k: rep[k] for k in _KEY}, **{k: rep.get(k) for k in RUN_FIELDS}} for rep in videos]}
    write_text(json.dumps(run, indent=1, sort_keys=True), run_record_path(out_dir))
    return index, report


def run_record_path(out_dir: str | Path) -> Path:
    """``<out_dir>.run.json``: what the last run of the crop stage did to each video (``status``: computed,
    cached, failed or missing; ``seconds`` of the computed ones). Beside the output folder, not in it: not
    part of the DVC output, which depends on the videos and params only."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.run.json"


def shard_report_path(out_dir: str | Path, i: int, n: int) -> Path:
    """``<out_dir>.shard-i-of-n.json``: what shard ``i`` of ``n`` did to its videos (their reports, with the
    run's status and seconds), read by :func:`merge`. Beside the output folder, like :func:`run_record_path`."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.shard-{i}-of-{n}.json"
