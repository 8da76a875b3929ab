"""The manifest follows the data: the real `dvc repro` in a temporary git + DVC repository whose dataset is a
plain folder outside DVC (as FF++ / Celeb-DF / DFDC are). Deleting a video re-runs the manifest without it,
adding one lists it, an unchanged dataset re-runs neither `manifest` nor `crop` (only the always-run
`scan`, whose output does not change), and a video replaced by other bytes of the same size (which leaves the
manifest as it was) is cropped again, alone."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.ingest.demo.sources import fetch
from pipeline.ingest.video import iter_frames, write_video
from workspace import make_workspace, run_dvc, stages_run

pytestmark = pytest.mark.slow

PARAMS = {
    "demo": {"enabled": False},
    "data": {"datasets": [{"name": "mine", "type": "plain", "root": "videos"}]},
    "clip": {"frames": 8, "snippet_length": 4},
    "crop": {"image_size": 32, "detect_max_side": 160, "max_windows_per_video": 1},
}


def _clip(src: str, start: int, dest: Path, raw: bool = False, mirror: bool = False) -> Path:
    """10 frames of a real face video from ``start``, at 320 x 180 (each clip its own bytes). ``raw``:
    uncompressed (AVI, rawvideo), whose size depends on the frame count and size only, so a ``mirror``-ed raw
    clip has exactly the size of the raw clip and other bytes."""
    frames = [np.asarray(Image.fromarray(f).resize((320, 180), Image.BILINEAR))
              for i, f in enumerate(iter_frames(fetch(src), max_frames=start + 10)) if i >= start]
    frames = [f[:, ::-1].copy() for f in frames] if mirror else frames
    dest.parent.mkdir(parents=True, exist_ok=True)
    codec = {"codec": "rawvideo", "pix_fmt": "bgr24"} if raw else {}
    return write_video(dest, frames, fps=25, **codec)


def _listed(ws: Path) -> set[str]:
    df = pd.read_csv(ws / "data/manifest.csv", dtype=str, keep_default_na=False)
    return {f"{m}/{v}" for m, v in zip(df.method, df.video_id)}


def test_manifest_reruns_when_a_video_is_deleted_or_added_and_only_then(tmp_path):
    ws = make_workspace(tmp_path / "repo", PARAMS)
    for k in range(4):   # 4 real and 4 fake: every split gets both (2/1/1 per method)
        _clip("single_face.mp4", 10 * k, ws / f"videos/real/r{k}.mp4")
        _clip("single_face.mp4" if k < 3 else "carphone_pristine.mp4", 40 + 10 * k if k < 3 else 0,
              ws / f"videos/fake/f{k}.mp4")
    first = run_dvc(ws, "repro", "crop")
    assert stages_run(first.stdout) == ["demo", "scan", "manifest", "crop"]
    assert _listed(ws) == {f"real/r{k}" for k in range(4)} | {f"fake/f{k}" for k in range(4)}

    again = run_dvc(ws, "repro", "crop")                       # nothing changed: nothing re-runs
    assert stages_run(again.stdout) == ["scan"], again.stdout

    (ws / "videos/real/r3.mp4").unlink()                        # delete a video
    deleted = run_dvc(ws, "repro", "crop")
    assert stages_run(deleted.stdout) == ["scan", "manifest", "crop"]
    assert "real/r3" not in _listed(ws) and len(_listed(ws)) == 7
    assert "7 videos (0 computed, 7 cached)" in deleted.stdout + deleted.stderr   # data/crops persists
    assert not (ws / "data/crops/mine/real/r3.h5").exists()                    # ... and is pruned
    assert (ws / "data/crops/mine/real/r2.h5").exists()

    _clip("carphone_pristine.mp4", 20, ws / "videos/real/r9.mp4")  # add one
    added = run_dvc(ws, "repro", "crop")
    assert stages_run(added.stdout) == ["scan", "manifest", "crop"]
    assert "real/r9" in _listed(ws) and len(_listed(ws)) == 8
    assert "8 videos (1 computed, 7 cached)" in added.stdout + added.stderr
    index = pd.read_csv(ws / "data/crops/index.csv", dtype=str)
    assert "r3" not in set(index.video_id)

    raw = _clip("single_face.mp4", 20, ws / "videos/real/r5.avi", raw=True)   # an uncompressed video, cropped once
    assert "9 videos (1 computed, 8 cached)" in (lambda r: r.stdout + r.stderr)(run_dvc(ws, "repro", "crop"))
    manifest = (ws / "data/manifest.csv").read_bytes()
    with h5py.File(ws / "data/crops/mine/real/r5.h5") as f:
        clips = f["clips"][:]
    size = raw.stat().st_size
    _clip("single_face.mp4", 20, raw, raw=True, mirror=True)                  # replaced: same size, other bytes
    assert raw.stat().st_size == size
    replaced = run_dvc(ws, "repro", "crop")
    assert stages_run(replaced.stdout) == ["scan", "manifest", "crop"], replaced.stdout
    assert (ws / "data/manifest.csv").read_bytes() == manifest          # the manifest cannot tell ...
    assert "9 videos (1 computed, 8 cached)" in replaced.stdout + replaced.stderr   # ... the crop stage can
    with h5py.File(ws / "data/crops/mine/real/r5.h5") as f:
        assert f["clips"].shape == clips.shape and not np.array_equal(f["clips"][:], clips)
