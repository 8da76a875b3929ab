"""crop stage: real MTCNN on short pieces of real videos (pipeline.ingest.demo.sources), plus unit tests on hand-made numbers."""
from __future__ import annotations

import hashlib

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from pipeline.cpu_kernels import kernel_signature
from pipeline.ingest import cropping as cropmod
from pipeline.ingest.cropping import video_crop
from pipeline.stages import crop as crop_stage
from pipeline.ingest.clips import ClipDataset, clip_to_tensor
from pipeline.ingest.demo.sources import fetch
from pipeline.ingest.faces import (FaceDetector, box_iou, crop_window, landmarks_to_crop, smooth_boxes,
                            square_crop, track_main_face)
from pipeline.params import parse_params
from pipeline.runtime import resolve_workers
from pipeline.ingest.video import ReadStats, VideoError, iter_frames, probe, read_frames, write_video

torch.set_num_threads(1)

F = 8          # clip.frames in these tests
S = 32         # crop.image_size


# --------------------------------------------------------------------------- fixtures: real video pieces
def _cut(src: str, n: int, size, dest: Path, start: int = 0, **kw) -> Path:
    frames = []
    for i, fr in enumerate(iter_frames(fetch(src), max_frames=start + n)):
        if i >= start:
            frames.append(np.asarray(Image.fromarray(fr).resize(size, Image.BILINEAR)))
    return write_video(dest, frames, fps=25, **kw)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("media")
    m = {}
    m["langer"] = _cut("WolfgangLanger_Pexels.mp4", 32, (320, 180), d / "langer.mp4")
    m["single"] = _cut("single_face.mp4", 24, (320, 180), d / "single.mp4")
    m["noface"] = _cut("no_face.mp4", 16, (320, 180), d / "noface.mp4")
    # grayscale, odd-sized (ffv1 keeps gray and odd sizes)
    gray = [np.asarray(Image.fromarray(f).convert("L").resize((175, 143)))
            for f in read_frames(fetch("carphone_pristine.mp4"), max_frames=16)]
    m["gray"] = d / "gray_odd.mkv"
    import av
    with av.open(str(m["gray"]), "w") as out:
        s = out.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 175, 143, "gray"
        for g in gray:
            for p in s.encode(av.VideoFrame.from_ndarray(g, format="gray")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    # truncated: a real mp4 cut in half; with its index at the front (faststart) the first part stays readable,
    # with the index at the end (the default) nothing is
    full = _cut("WolfgangLanger_Pexels.mp4", 64, (320, 180), d / "full.mp4", start=100,
                container_options={"movflags": "faststart"})
    data = full.read_bytes()
    m["truncated"] = d / "truncated.mp4"
    m["truncated"].write_bytes(data[: len(data) // 2])
    data = _cut("single_face.mp4", 24, (320, 180), d / "full2.mp4").read_bytes()
    m["truncated_tail"] = d / "truncated_tail.mp4"
    m["truncated_tail"].write_bytes(data[: len(data) // 2])
    m["garbage"] = d / "garbage.mp4"
    m["garbage"].write_bytes(os.urandom(5000))
    m["empty"] = d / "empty.mp4"
    m["empty"].write_bytes(b"")
    # a manipulation mask for the single-face clip: a filled rectangle over the middle
    masks = np.zeros((24, 180, 320), np.uint8)
    masks[:, 50:130, 110:210] = 255
    m["mask"] = d / "single_masks.npz"
    np.savez_compressed(m["mask"], masks=masks)
    return m


def _row(dataset, method, vid, path, label, split, identity="", mask=""):
    return dict(dataset=dataset, method=method, video_id=vid, path=str(path), label=label, split=split,
                identity=identity, source_id="", mask_path=str(mask) if mask else "",
                size_bytes=Path(path).stat().st_size)


def _setup(tmp: Path, rows: list[dict], out: str = "crops", **crop_kw) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)
    crop = dict(out_dir=str(tmp / out), image_size=S, detect_max_side=160, detect_batch=16, smooth=3,
                compression=1, num_workers=1)  # one process (fast); the worker processes have their own test
    crop.update(crop_kw)
    params = {"device": "cpu", "data": {"manifest": str(tmp / "manifest.csv")},
              "clip": {"frames": F, "snippet_length": 4}, "crop": crop}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp / "params.yaml"


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(max_side=160, batch=16)


# --------------------------------------------------------------------------- unit: geometry
def test_square_crop_and_landmark_transform():
    frame = (np.arange(100 * 100 * 3) % 251).astype(np.uint8).reshape(100, 100, 3)
    box = [40, 40, 60, 60]
    assert crop_window(box, 0.0) == (40, 40, 20)
    c = square_crop(frame, box, 0.0, 20)
    assert c.shape == (20, 20, 3) and np.array_equal(c, frame[40:60, 40:60])
    # margin 0.5 on a 20x10 box: side 30 around the centre (50, 45)
    assert crop_window([40, 40, 60, 50], 0.5) == (35, 30, 30)
    pts = np.array([[50.0, 45.0], [35.0, 30.0]])
    np.testing.assert_allclose(landmarks_to_crop(pts, [40, 40, 60, 50], 0.5, 60), [[30, 30], [0, 0]])
    # at the border the outside is zero-padded, the inside is the frame
    c = square_crop(frame, [-10, -10, 10, 10], 0.0, 20)
    assert c.shape == (20, 20, 3)
    assert (c[:10, :] == 0).all() and (c[:, :10] == 0).all()
    assert np.array_equal(c[10:, 10:], frame[:10, :10])
    # box fully outside: all zeros; grayscale (2-D) masks work too
    assert (square_crop(frame, [200, 200, 220, 220], 0.0, 16) == 0).all()
    mk = np.zeros((100, 100), np.uint8)
    mk[40:50] = 255
    cm = square_crop(mk, box, 0.0, 40, resample=Image.NEAREST)
    assert cm.shape == (40, 40) and set(np.unique(cm)) == {0, 255}


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0])


def test_smooth_boxes():
    const = np.tile([[10, 20, 30, 40]], (7, 1)).astype(np.float32)
    np.testing.assert_allclose(smooth_boxes(const, 5), const)
    x = np.arange(7, dtype=np.float32)[:, None].repeat(4, 1) * 3
    sm = smooth_boxes(x, 3)
    np.testing.assert_allclose(sm[1:-1], x[1:-1])           # linear motion kept in the interior
    np.testing.assert_allclose(sm[0], (x[0] + x[1]) / 2)   # shrunken window at the ends
    jitter = x + np.array([1, -1, 1, -1, 1, -1, 1], np.float32)[:, None]
    assert np.abs(smooth_boxes(jitter, 3)[1:-1] - x[1:-1]).max() < 1.0
    np.testing.assert_allclose(smooth_boxes(x, 1), x)


def test_track_main_face_links_bridges_and_breaks():
    big = lambda t: np.array([100 + 2 * t, 100, 200 + 2 * t, 200], np.float32)  # the main face, moving right
    small = np.array([10, 10, 40, 40], np.float32)                              # a second, smaller face
    frames = []
    for t in range(30):
        if t in (5, 6):                       # missed detections: bridged (gap 2 <= 5)
            frames.append(np.zeros((0, 4)))
        elif 12 <= t < 19:                    # 7 frames without a face: > max_gap -> the track breaks
            frames.append((small[None], np.array([0.99])))
        elif t == 25:
            frames.append(None)               # detector did not run (detect_every): interpolated, not a gap
        else:
            frames.append((np.stack([small, big(t)]), np.array([0.99, 0.98])))
    segs = track_main_face(frames, iou_threshold=0.3, max_gap=5)
    assert [(s.start, len(s)) for s in segs] == [(0, 12), (19, 11)]
    s0, s1 = segs
    np.testing.assert_allclose(s0.boxes[5], big(5))   # interpolated over the missed frames
    np.testing.assert_allclose(s0.boxes[6], big(6))
    assert not s0.detected[5] and s0.detected[4]
    np.testing.assert_allclose(s1.boxes[25 - 19], big(25))
    # the small face (also confident) is never chosen: the main face is the larger one
    assert all((s.boxes[:, 2] - s.boxes[:, 0] > 90).all() for s in segs)
    # min_confidence drops low-probability faces
    weak = [(big(t)[None], np.array([0.5])) for t in range(5)]
    assert track_main_face(weak, min_confidence=0.9) == []
    assert len(track_main_face(weak, min_confidence=0.4)[0]) == 5


def test_select_windows():
    from pipeline.ingest.faces import Segment
    seg = lambda start, n: Segment(start, np.zeros((n, 4)), np.zeros((n, 5, 2)), np.zeros(n), np.ones(n, bool))
    segs = [seg(0, 20), seg(30, 7), seg(40, 16)]
    assert cropmod.select_windows(segs, 8) == [(0, 0), (0, 8), (2, 0), (2, 8)]
    assert cropmod.select_windows(segs, 8, stride=4) == [(0, 0), (0, 4), (0, 8), (0, 12), (2, 0), (2, 4), (2, 8)]
    assert cropmod.select_windows(segs, 8, max_windows=2) == [(0, 0), (2, 8)]


# --------------------------------------------------------------------------- video I/O
def test_probe_and_broken_files(media):
    info = probe(media["langer"])
    assert (info.frames, info.width, info.height) == (32, 320, 180) and info.codec == "h264"
    for name in ("garbage", "empty", "truncated_tail"):
        with pytest.raises(VideoError, match=str(media[name].name)):
            probe(media[name])
    with pytest.raises(VideoError, match="not found"):
        probe(media["langer"].parent / "nope.mp4")
    g = read_frames(media["gray"])
    assert len(g) == 16 and g[0].shape == (143, 175, 3) and g[0].dtype == np.uint8
    st = ReadStats()
    frames = read_frames(media["truncated"], stats=st)
    assert 0 < st.frames_read == len(frames) < 64


# --------------------------------------------------------------------------- real detection + tracking
def test_detector_batched_and_every(detector, media):
    frames = read_frames(media["langer"], max_frames=16)
    det = detector.detect(frames)
    assert det.frames_with_face == 16 and all(det.ran)
    lm = det.landmarks[0][0]
    b = det.boxes[0][0]
    assert ((lm[:, 0] > b[0]) & (lm[:, 0] < b[2]) & (lm[:, 1] > b[1]) & (lm[:, 1] < b[3])).all()
    d2 = FaceDetector(max_side=160, batch=8, every=3)
    det2 = d2.detect_stream(iter(frames))
    assert det2.ran == [i % 3 == 0 for i in range(16)]   # 15 is a multiple of 3: the last frame ran anyway
    d4 = FaceDetector(max_side=160, batch=8, every=4)
    det4 = d4.detect_stream(iter(frames))
    assert det4.ran == [i % 4 == 0 or i == 15 for i in range(16)]   # and the last frame, so the track ends there
    np.testing.assert_allclose(det4.boxes[15], det.boxes[15], atol=1e-3)
    seg4 = track_main_face(det4, 0.3, 2, 0.9)
    assert len(seg4) == 1 and seg4[0].start == 0 and len(seg4[0]) == 16
    segs = track_main_face(det2, 0.3, 2, 0.9)
    assert len(segs) == 1 and segs[0].start == 0 and len(segs[0]) == 16
    np.testing.assert_allclose(segs[0].boxes[0], det.boxes[0][0], atol=1e-3)
    assert box_iou(segs[0].boxes[1:2], det.boxes[1][:1])[0, 0] > 0.8   # interpolation close to a real detection


def test_crop_video_real_face(tmp_path, detector, media):
    cp = parse_params({"crop": {"image_size": S, "detect_max_side": 160, "smooth": 3}}).crop
    row = _row("demo", "real", "langer", media["langer"], 0, "train", "w1")
    out = tmp_path / "langer.h5"
    rep = cropmod.crop_video(row, F, cp, out, detector=detector)
    assert rep["skipped"] is None and rep["frames_read"] == 32 and rep["frames_with_face"] == 32
    assert rep["windows"] == 4
    with h5py.File(out) as f:
        assert f["clips"].shape == (4, F, S, S, 3) and f["clips"].dtype == np.uint8
        assert f["clips"].chunks == (1, F, S, S, 3) and f["clips"].compression == "gzip"
        assert f["landmarks"].shape == (4, F, 5, 2) and f["landmarks"].dtype == np.float32
        assert f["boxes"].shape == (4, F, 4) and f["frame_index"].shape == (4, F)
        np.testing.assert_array_equal(f["frame_index"][:].ravel(), np.arange(32))
        assert "masks" not in f
        a = f.attrs
        assert (a["dataset"], a["method"], a["video_id"], int(a["label"])) == ("demo", "real", "langer", 0)
        assert "split" not in a and "identity" not in a   # the split lives in index.csv: a re-split reuses crops
        assert a["fps"] == pytest.approx(25.0) and a["params_hash"] == cropmod.params_hash(F, cp)
        boxes = f["boxes"][:].reshape(-1, 4)
        lms = f["landmarks"][:]
        clips = f["clips"][:]
    # stable track: consecutive boxes overlap a lot, centres move little relative to the face size
    ious = np.array([box_iou(boxes[i:i + 1], boxes[i + 1:i + 2])[0, 0] for i in range(len(boxes) - 1)])
    assert ious.min() > 0.8
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2] - boxes[:, 0]).mean()
    assert np.linalg.norm(np.diff(ctr, axis=0), axis=1).max() < 0.1 * side
    # landmarks inside the crop, eyes above mouth, and the crop is not blank
    assert (lms > 0).all() and (lms < S).all()
    assert (lms[..., 0:2, 1].mean() < lms[..., 3:5, 1].mean())
    assert clips.std() > 10


# --------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def stage_run(tmp_path_factory, media):
    """One full stage run on real, faceless, broken, truncated, gray/odd and masked videos."""
    tmp = tmp_path_factory.mktemp("stage")
    rows = [
        _row("demo", "real", "langer", media["langer"], 0, "train", "w1"),
        _row("demo", "real", "single", media["single"], 0, "test", "m1"),
        _row("demo", "faceswap", "single", media["single"], 1, "test", "m1", mask=media["mask"]),
        _row("demo", "real", "cartoon", media["noface"], 0, "train", "c1"),
        _row("demo", "real", "gray", media["gray"], 0, "val", "g1"),
        _row("demo", "real", "truncated", media["truncated"], 0, "train", "w1"),
        _row("demo", "real", "truncated_tail", media["truncated_tail"], 0, "train", "w1"),
        _row("demo", "real", "garbage", media["garbage"], 0, "train", "x"),
        _row("demo", "real", "empty", media["empty"], 0, "train", "x"),
    ]
    pfile = _setup(tmp, rows)
    rc = crop_stage.main(["--params", str(pfile), "--no-progress"])
    return tmp, pfile, rows, rc


def test_stage_handles_every_kind_of_video(stage_run):
    tmp, pfile, rows, rc = stage_run
    assert rc == 0
    out = tmp / "crops"
    index = pd.read_csv(out / "index.csv", keep_default_na=False, dtype={"video_id": str})
    assert list(index.columns) == cropmod.INDEX_COLUMNS
    report = json.loads((out / "report.json").read_text())
    v = {(r["method"], r["video_id"]): r for r in report["videos"]}
    assert v[("real", "langer")]["windows"] == 4 and v[("real", "single")]["windows"] == 3
    assert v[("real", "gray")]["windows"] == 2 and v[("real", "gray")]["skipped"] is None   # gray + odd size ok
    assert "no face" in v[("real", "cartoon")]["skipped"] and "noface.mp4" in v[("real", "cartoon")]["skipped"]
    assert v[("real", "cartoon")]["frames_read"] == 16 and v[("real", "cartoon")]["windows"] == 0
    for name in ("garbage", "empty", "truncated_tail"):
        assert v[("real", name)]["skipped"].startswith("unreadable") and f"{name}.mp4" in v[("real", name)]["skipped"]
    tr = v[("real", "truncated")]
    # the readable first part of the truncated file is cropped, the loss is reported
    assert 8 <= tr["frames_read"] < 64 and tr["windows"] >= 1 and tr["skipped"] is None
    assert "of 64 frames" in tr["read_error"] and "truncated.mp4" in tr["read_error"]
    with h5py.File(out / "demo/real/truncated.h5") as f:
        assert f["frame_index"][:].max() < tr["frames_read"]
    t = report["totals"]
    assert t["videos"] == 9 and t["windows"] == len(index) and t["skipped"] == 4
    # index rows: one per window, label/split/identity from the manifest
    fs = index[(index.method == "faceswap")]
    assert len(fs) == 3 and (fs.label == 1).all() and (fs.split == "test").all() and (fs.identity == "m1").all()
    assert set(index.file) >= {"demo/real/langer.h5", "demo/faceswap/single.h5"}
    # masks cropped with the same boxes
    with h5py.File(out / "demo/faceswap/single.h5") as f, h5py.File(out / "demo/real/single.h5") as g:
        assert f["masks"].shape == (3, F, S, S) and set(np.unique(f["masks"][:])) <= {0, 255}
        assert f["masks"][:].mean() > 20
        np.testing.assert_array_equal(f["clips"][:], g["clips"][:])
        assert f.attrs["label"] == 1
    assert not list(out.rglob(".*.tmp*"))


def test_stage_resumes_after_interruption(stage_run):
    tmp, pfile, rows, _ = stage_run
    out = tmp / "crops"
    target = out / "demo/real/single.h5"
    keep = out / "demo/real/langer.h5"
    mt_keep = keep.stat().st_mtime_ns
    before = _folder_digest(out)
    target.unlink()
    (target.parent / ".single.h5.tmpXYZ").write_bytes(b"half-written")   # a killed run's temp file
    time.sleep(0.01)
    assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 0
    run = json.loads(cropmod.run_record_path(out).read_text())
    status = {(r["method"], r["video_id"]): r["status"] for r in run["videos"]}
    assert status[("real", "single")] == "computed"
    assert all(s == "cached" for k, s in status.items() if k != ("real", "single"))
    assert keep.stat().st_mtime_ns == mt_keep and target.exists()
    assert not (target.parent / ".single.h5.tmpXYZ").exists()
    # a changed manifest row (size) or param re-runs that video only
    assert run["totals"]["computed"] == 1
    # the output folder (DVC's hash of it) does not record the run: recomputed and cached, it is the same bytes
    assert _folder_digest(out) == before


def test_crops_of_other_kernels_are_not_reused(stage_run, monkeypatch):
    """A crop file records the kernels that computed it (pipeline.cpu_kernels.kernel_signature); under another
    pin (here MKL's branch) every video is cropped again rather than mixed with the old files, and under that pin
    the new files are then reused. (On a copy of the stage's outputs: the other tests keep theirs.)"""
    tmp, _, rows, _ = stage_run
    pfile = _setup(tmp / "kernels", rows)
    shutil.copytree(tmp / "crops", tmp / "kernels/crops")
    out = tmp / "kernels/crops"
    with h5py.File(out / "demo/real/langer.h5") as f:
        assert f.attrs["kernels"] == kernel_signature()
    other = "AUTO" if os.environ.get("MKL_CBWR") != "AUTO" else "COMPATIBLE"
    monkeypatch.setenv("MKL_CBWR", other)
    assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 0
    status = [r["status"] for r in json.loads(cropmod.run_record_path(out).read_text())["videos"]]
    assert "cached" not in status, status
    with h5py.File(out / "demo/real/langer.h5") as f:
        assert f"MKL_CBWR={other}" in f.attrs["kernels"]
    assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 0
    run = json.loads(cropmod.run_record_path(out).read_text())
    status = {(r["method"], r["video_id"]): r["status"] for r in run["videos"]}
    assert status[("real", "langer")] == status[("real", "single")] == status[("faceswap", "single")] == "cached"


def test_a_video_or_mask_replaced_by_other_bytes_of_the_same_size_is_cropped_again(tmp_path, media):
    """The manifest row (path, size) cannot see a file replaced by another of the same size; the crop file's
    ``content`` attr (SHA-256 of the video and its mask) does. Uncompressed video keeps the size exactly."""
    import av
    frames = list(read_frames(media["langer"]))
    raw = lambda dest, fr: write_video(dest, fr, codec="rawvideo", pix_fmt="bgr24")  # noqa: E731
    video, mirrored = raw(tmp_path / "v.avi", frames), raw(tmp_path / "m.avi", [f[:, ::-1].copy() for f in frames])
    mask = np.zeros((len(frames), 180, 320), np.uint8)
    mask[:, 40:140, 100:220] = 255
    np.savez(tmp_path / "mask.npz", masks=mask)
    rows = [_row("demo", "faceswap", "v", video, 1, "test", "p", mask=tmp_path / "mask.npz")]
    pfile = _setup(tmp_path / "run", rows)
    out = tmp_path / "run/crops/demo/faceswap/v.h5"

    def run() -> tuple[str, np.ndarray, np.ndarray]:
        assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 0
        status = json.loads(cropmod.run_record_path(tmp_path / "run/crops").read_text())["videos"][0]["status"]
        with h5py.File(out) as f:
            return status, f["clips"][:], f["masks"][:]

    status, clips, masks = run()
    assert status == "computed" and masks.mean() > 0
    assert run()[0] == "cached"                                       # unchanged bytes: reused
    assert mirrored.stat().st_size == video.stat().st_size            # same size, same manifest row
    shutil.copyfile(mirrored, video)
    status, clips2, masks2 = run()
    assert status == "computed" and not np.array_equal(clips, clips2)   # the mirrored face
    mask[:] = 0
    mask[:, 60:160, 80:200] = 255                                     # the same array size, other pixels
    size = (tmp_path / "mask.npz").stat().st_size
    np.savez(tmp_path / "mask.npz", masks=mask)
    assert (tmp_path / "mask.npz").stat().st_size == size
    status, clips3, masks3 = run()
    assert status == "computed" and not np.array_equal(masks2, masks3)
    np.testing.assert_array_equal(clips2, clips3)
    assert run()[0] == "cached"


def _folder_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_shards_plus_merge_equal_single_run(stage_run):
    tmp, pfile, rows, _ = stage_run
    sh = tmp / "sharded"
    pfile2 = _setup(sh, rows, out="crops")
    assert crop_stage.main(["--params", str(pfile2), "--shard", "1/2", "--no-progress"]) == 0
    assert crop_stage.main(["--params", str(pfile2), "--shard", "2/2", "--no-progress"]) == 0
    assert (sh / "crops.shard-1-of-2.json").exists() and (sh / "crops.shard-2-of-2.json").exists()
    assert not (sh / "crops/index.csv").exists()
    assert crop_stage.main(["--params", str(pfile2), "--merge", "--no-progress"]) == 0
    a = (tmp / "crops/index.csv").read_text()
    b = (sh / "crops/index.csv").read_text()
    assert a == b
    for rel in pd.read_csv(sh / "crops/index.csv").file.unique():
        with h5py.File(tmp / "crops" / rel) as f, h5py.File(sh / "crops" / rel) as g:
            for k in ("clips", "landmarks", "boxes", "frame_index"):
                np.testing.assert_array_equal(f[k][:], g[k][:])
    ra = json.loads((tmp / "crops/report.json").read_text())["totals"]
    rb = json.loads((sh / "crops/report.json").read_text())["totals"]
    for k in ("videos", "windows", "skipped", "frames_read", "frames_with_face"):
        assert ra[k] == rb[k]
    # the shard reports (with the run's status and seconds) stay outside the folder DVC tracks
    assert sorted(_folder_digest(tmp / "crops")) == sorted(_folder_digest(sh / "crops"))


def _same_outputs(a: Path, b: Path) -> None:
    """Every per-video file of crop folders ``a`` and ``b`` holds the same arrays, bit for bit (boxes and
    landmarks included), and the same skip reason."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.h5"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.h5")) and files
    for rel in files:
        with h5py.File(a / rel) as f, h5py.File(b / rel) as g:
            assert sorted(f) == sorted(g), rel
            for k in f:
                np.testing.assert_array_equal(f[k][:], g[k][:], err_msg=f"{rel}:{k}")
            assert f.attrs["skipped"] == g.attrs["skipped"] and f.attrs["params_hash"] == g.attrs["params_hash"]
    assert (a / "index.csv").read_text() == (b / "index.csv").read_text()


def test_worker_processes_give_the_same_crops_as_one_process(stage_run):
    """crop.num_workers: 2 spawned processes crop the same videos (real faces, no face, broken, truncated,
    masked) into the same crops, bit for bit: each video is cropped by the same code, frame for frame, with
    pool.DETECT_THREADS torch threads, whatever process runs it and however many threads that process had
    (MTCNN's sums split over 1 or 2 threads differ by up to 1.3e-5 px, measured before the threads were fixed)."""
    tmp, pfile, rows, _ = stage_run
    par = tmp / "parallel"
    pfile2 = _setup(par, rows, out="crops", num_workers=2)
    assert crop_stage.main(["--params", str(pfile2), "--no-progress"]) == 0
    _same_outputs(tmp / "crops", par / "crops")
    two = tmp / "two_threads"                        # this process with 2 threads, as a 2-core machine has
    pfile3 = _setup(two, rows, out="crops", num_workers=1)
    torch.set_num_threads(2)
    try:
        assert crop_stage.main(["--params", str(pfile3), "--no-progress"]) == 0
        assert torch.get_num_threads() == 2          # given back
    finally:
        torch.set_num_threads(1)
    _same_outputs(par / "crops", two / "crops")
    report = json.loads((par / "crops/report.json").read_text())
    assert json.loads(cropmod.run_record_path(par / "crops").read_text())["totals"]["computed"] == len(rows)
    assert report["totals"]["skipped"] == 4
    # num_workers is not part of the crop hash: the outputs of one setting are reused by the other
    assert cropmod.params_hash(F, parse_params({"crop": {"num_workers": 2}}).crop) == \
        cropmod.params_hash(F, parse_params({"crop": {"num_workers": 1}}).crop)


def test_decoding_twice_gives_the_crops_of_kept_frames(stage_run, monkeypatch):
    """Frames of the detection pass are kept for the crop pass when they fit in KEEP_FRAMES_BYTES; a video
    over the budget is decoded a second time instead, with the same result."""
    tmp, pfile, rows, _ = stage_run
    again = tmp / "decode_twice"
    pfile2 = _setup(again, rows, out="crops")
    monkeypatch.setattr(video_crop, "KEEP_FRAMES_BYTES", 0)
    assert crop_stage.main(["--params", str(pfile2), "--no-progress"]) == 0
    _same_outputs(tmp / "crops", again / "crops")


def test_prefetch_keeps_order_raises_the_producers_error_and_stops_early():
    assert list(cropmod.prefetch(range(100), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise VideoError("x.mp4: cannot open as a video")

    it = cropmod.prefetch(broken())
    assert next(it) == 1
    with pytest.raises(VideoError, match="x.mp4"):
        next(it)
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    it = cropmod.prefetch(endless(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()  # the consumer stops: the producer thread ends and closes its source
    assert closed == [True]


def test_num_workers_auto_is_the_cores_at_most_8():
    assert resolve_workers("auto", "cpu") == min(8, len(os.sched_getaffinity(0))) and resolve_workers(3) == 3
    with pytest.raises(ValueError, match="num_workers"):
        parse_params({"crop": {"num_workers": 0}})


def test_num_workers_auto_counts_only_the_cpus_this_process_may_use():
    """Under ``taskset -c 0`` (or a scheduler's cpuset) "auto" is 1 worker, not one per core of the machine."""
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from pipeline.runtime import resolve_workers; print(resolve_workers('auto'), os.cpu_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out[0] == "1", f"auto gave {out[0]} workers on one usable CPU of {out[1]}"


def test_stage_fails_without_any_window(tmp_path, media, capsys):
    pfile = _setup(tmp_path, [_row("demo", "real", "cartoon", media["noface"], 0, "train"),
                              _row("demo", "real", "garbage", media["garbage"], 0, "train")])
    assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no window" in err and "noface.mp4" in err
    (tmp_path / "manifest.csv").unlink()
    assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 2
    assert "manifest not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- reader
def test_clip_dataset(stage_run):
    tmp, _, _, _ = stage_run
    out = tmp / "crops"
    ds = ClipDataset(out)
    index = pd.read_csv(out / "index.csv")
    assert len(ds) == len(index) > 0
    item = ds[0]
    assert item["clip"].shape == (F, S, S, 3) and item["clip"].dtype == torch.uint8
    assert set(item) >= {"clip", "label", "dataset", "method", "video_id", "window"}
    test = ClipDataset(out / "index.csv", split="test")
    assert len(test) == 6 and sorted(set(test.labels.tolist())) == [0, 1]
    fake = [test[i] for i in range(len(test)) if test[i]["method"] == "faceswap"]
    assert all(x["label"] == 1 for x in fake) and [x["window"] for x in fake] == [0, 1, 2]
    with h5py.File(out / "demo/faceswap/single.h5") as f:
        assert torch.equal(fake[1]["clip"], torch.from_numpy(f["clips"][1]))
    x = clip_to_tensor(item["clip"])
    assert x.shape == (3, F, S, S) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    loader = torch.utils.data.DataLoader(ClipDataset(out, split="train"), batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == len(ClipDataset(out, split="train"))
    assert batches[0]["clip"].shape[1:] == (F, S, S, 3)
    assert clip_to_tensor(batches[0]["clip"]).shape[1:] == (3, F, S, S)


@pytest.mark.parametrize("size", [(2, 2), (18, 14)])
def test_frames_too_small_for_detection_are_skipped_with_their_size(tmp_path, size):
    """Regression: tiny videos were skipped with "torch.cat(): expected a non-empty list of Tensors"."""
    from pipeline.ingest.video import write_video
    w, h = size
    path = tmp_path / "tiny.mp4"
    write_video(path, np.zeros((4, h, w, 3), np.uint8), fps=25)
    row = {"dataset": "d", "method": "real", "video_id": "tiny", "path": str(path), "label": 0, "split": "train",
           "identity": "x", "source_id": "", "mask_path": "", "size_bytes": path.stat().st_size}
    p = parse_params({"crop": {"image_size": 32}, "clip": {"frames": 4, "snippet_length": 2}})
    rep = cropmod.crop_video(row, 4, p.crop, tmp_path / "out.h5")
    assert rep["windows"] == 0
    assert rep["skipped"].startswith(f"frame too small for face detection ({w} x {h}) in {path}")


def _make_unreadable(path: Path) -> str:
    """Make ``path`` unreadable for this process; returns how. As a normal user: ``chmod 000``. As root chmod
    does not stop reading, so the file is moved aside and a directory takes its name: ``open()`` then fails
    with an OS error (IsADirectoryError) on the same code path as EACCES."""
    if os.geteuid() != 0:
        path.chmod(0)
        return "chmod"
    path.rename(path.with_name(path.name + ".aside"))
    path.mkdir()
    return "dir"


def _make_readable(path: Path, how: str) -> None:
    if how == "chmod":
        path.chmod(0o644)
    else:
        path.rmdir()
        path.with_name(path.name + ".aside").rename(path)


def test_unreadable_video_is_not_cached_and_is_retried_when_readable(tmp_path, media, capsys):
    """Regression: "Permission denied" was stored as the video's crop result and never retried."""
    src = tmp_path / "videos" / "single.mp4"
    src.parent.mkdir()
    src.write_bytes(media["single"].read_bytes())
    pfile = _setup(tmp_path, [_row("demo", "real", "langer", media["langer"], 0, "train", "w1"),
                              _row("demo", "real", "single", src, 0, "test", "m1")])
    how = _make_unreadable(src)
    try:
        assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 1   # fails, so DVC runs it again
        err = capsys.readouterr().err
        assert f"cannot read {src}" in err and "not cached" in err and "1 of 2 videos could not be read" in err
        assert not (tmp_path / "crops/demo/real/single.h5").exists()             # nothing cached for it
        assert (tmp_path / "crops/demo/real/langer.h5").exists()                 # the readable one is kept
    finally:
        _make_readable(src, how)
    assert crop_stage.main(["--params", str(pfile), "--no-progress"]) == 0
    report = json.loads((tmp_path / "crops/report.json").read_text())
    v = {r["video_id"]: r for r in report["videos"]}
    assert v["single"]["windows"] == 3 and v["single"]["skipped"] is None
    run = {r["video_id"]: r for r in json.loads(cropmod.run_record_path(tmp_path / "crops").read_text())["videos"]}
    assert run["single"]["status"] == "computed" and run["langer"]["status"] == "cached"


def test_too_short_video_is_skipped_before_face_detection(tmp_path, media):
    """Regression: with clip.frames longer than the videos, detection ran over every frame before "too short"."""
    p = parse_params({"crop": {"image_size": 32}, "clip": {"frames": 100, "snippet_length": 20}})
    row = _row("demo", "real", "single", media["single"], 0, "train")

    class NoDetection:
        def detect_stream(self, frames):
            raise AssertionError("face detection ran on a video too short for one window")

    rep = cropmod.crop_video(row, 100, p.crop, tmp_path / "out.h5", detector=NoDetection())
    assert rep["skipped"] == (f"too short: {media['single']} has 24 frames, a window needs clip.frames = 100 "
                              "(checked before face detection)")
    assert rep["frames_read"] == 0


def test_row_signature_ignores_the_split_assignment_only():
    """A re-split, a subset of training people or a held-out family reuses every crop; a changed file does not."""
    row = {"dataset": "demo", "method": "real", "video_id": "v", "path": "/d/v.mp4", "label": 0, "split": "train",
           "identity": "p1", "source_id": "v", "mask_path": "", "size_bytes": 100}
    sig = cropmod.row_signature(row)
    assert cropmod.row_signature({**row, "split": "test", "identity": "p2", "source_id": "w"}) == sig
    assert cropmod.row_signature({**row, "size_bytes": 101}) != sig
    assert cropmod.row_signature({**row, "path": "/d/other.mp4"}) != sig
    assert cropmod.row_signature({**row, "mask_path": "m.npz"}) != sig
