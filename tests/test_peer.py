"""The peer stage: which frames and boxes it takes from a crop file, the 256 px faces it cuts from the video, the
scores it writes; and the real stage in a small DVC workspace (slow)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from peer_models.mesonet import fake_scores, load_meso4
from pipeline.ingest.faces import square_crop
from pipeline.ingest.video import read_frames, write_video
from pipeline.scoring.peer import PeerError, peer_faces, pick_frames, score_videos


def test_pick_frames_spreads_k_frames_over_the_windows_frames():
    fidx = np.array([[10, 11, 12, 13], [20, 21, 22, 23]])          # two windows of 4 frames
    boxes = np.stack([np.stack([[f, 0, f + 5, 5] for f in w]) for w in fidx]).astype(float)
    got, bx = pick_frames(fidx, boxes, 4)
    # 8 distinct frames, 4 picks at positions round(linspace(0, 7, 4)) = 0, 2, 5, 7
    assert got.tolist() == [10, 12, 21, 23] and bx[:, 0].tolist() == [10, 12, 21, 23]
    got, _ = pick_frames(fidx, boxes, 20)                            # fewer frames than asked: all of them
    assert got.tolist() == [10, 11, 12, 13, 20, 21, 22, 23]
    overlap = np.array([[0, 1, 2], [2, 3, 4]])                       # frame 2 in both windows: its first box
    ob = np.zeros((2, 3, 4))
    ob[0, 2], ob[1, 0] = [1, 1, 9, 9], [5, 5, 7, 7]
    got, bx = pick_frames(overlap, ob, 5)
    assert got.tolist() == [0, 1, 2, 3, 4] and bx[2].tolist() == [1, 1, 9, 9]
    assert pick_frames(np.zeros((0, 8), int), np.zeros((0, 8, 4)), 8)[0].size == 0


def _video_and_crop(tmp_path, name="v.mp4", n=12, windows=((0, 4), (6, 4))):
    """A 96 x 128 video whose frame i is a grey level 20 * i with a bright square moving right, and a crop file
    that says where the face box is in each window frame (as the crop stage writes it)."""
    frames = []
    for i in range(n):
        f = np.full((96, 128, 3), 20 * i, np.uint8)
        f[30:60, 10 + 5 * i:40 + 5 * i] = 250
        frames.append(f)
    video = write_video(tmp_path / name, frames, codec="libx264", options={"crf": "0"})
    fidx = np.array([list(range(s, s + k)) for s, k in windows])
    boxes = np.array([[[10 + 5 * i, 30, 40 + 5 * i, 60] for i in w] for w in fidx], np.float32)
    crop = tmp_path / f"{name}.h5"
    with h5py.File(crop, "w") as f:
        f.attrs["source"] = str(video)
        f.create_dataset("frame_index", data=fidx)
        f.create_dataset("boxes", data=boxes)
    return video, crop, fidx, boxes


def test_peer_faces_cuts_the_picked_frames_at_the_stored_boxes(tmp_path):
    video, crop, fidx, boxes = _video_and_crop(tmp_path)
    faces, got = peer_faces(crop, frames=3, margin=0.4)
    assert got.tolist() == [0, 6, 9]          # 8 distinct frames 0-3, 6-9: positions round(0, 3.5, 7) = 0, 4, 7
    assert faces.shape == (3, 256, 256, 3) and faces.dtype == np.uint8
    decoded = read_frames(video)
    flat = {int(f): b for f, b in zip(fidx.reshape(-1), boxes.reshape(-1, 4))}
    for face, fr in zip(faces, got):
        np.testing.assert_array_equal(face, square_crop(decoded[fr], flat[int(fr)], 0.4, 256))
        # the square follows the box: its centre is the bright patch, its corners the frame's grey level
        assert face[128, 128].mean() > 240 and abs(int(face[5, 5].mean()) - 20 * int(fr)) <= 3


def test_peer_faces_names_a_missing_video_and_a_short_one(tmp_path):
    video, crop, _, _ = _video_and_crop(tmp_path)
    with h5py.File(crop, "a") as f:
        f.attrs["source"] = str(tmp_path / "gone.mp4")
    with pytest.raises(PeerError, match=r"gone.mp4 \(the video of .*v.mp4.h5\) not found"):
        peer_faces(crop)
    _, crop2, _, _ = _video_and_crop(tmp_path, "w.mp4", n=6, windows=((0, 4), (6, 4)))  # frames 6-9 do not exist
    with pytest.raises(PeerError, match=r"w.mp4: decoding stopped before frame 9"):
        peer_faces(crop2)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(PeerError, match=r"bad.h5: not a crop file"):
        peer_faces(tmp_path / "bad.h5")


def test_score_videos_scores_the_test_videos_of_the_crop_index(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    rows = []
    for k, (label, split) in enumerate([(0, "test"), (1, "test"), (1, "train")]):
        _, crop, _, _ = _video_and_crop(crops, f"v{k}.mp4", n=10 + k, windows=((0, 4), (5, 4)))
        for w in range(2):
            rows.append({"dataset": "demo", "method": "real" if label == 0 else "sbi", "video_id": f"v{k}",
                         "label": label, "split": split, "identity": f"p{k}", "file": crop.name, "window": w})
    pd.DataFrame(rows).to_csv(crops / "index.csv", index=False)
    model = load_meso4("Meso4_DF")
    out = score_videos(crops, model, "test", frames=4, margin=0.4, progress=False)
    assert out["video_id"].tolist() == ["v0", "v1"] and out["n_frames"].tolist() == [4, 4]
    assert out["method"].tolist() == ["real", "sbi"] and out["identity"].tolist() == ["p0", "p1"]
    for r in out.itertuples():
        faces, _ = peer_faces(crops / f"{r.video_id}.mp4.h5", 4, 0.4)
        assert r.score == pytest.approx(float(np.mean(fake_scores(model, faces))), abs=1e-12)
    with pytest.raises(PeerError, match=r"index.csv: crop index not found"):
        score_videos(tmp_path, model)


# --------------------------------------------------------------------------- the real stage, in a workspace
@pytest.mark.slow
def test_the_peer_stage_in_a_small_dvc_workspace(tmp_path):
    from pipeline import paths
    from workspace import make_workspace, run_dvc, stages_run
    from test_pipeline_e2e import TINY

    ws = make_workspace(tmp_path / "repo", TINY)
    res = run_dvc(ws, "repro", "peer", "baseline")
    assert stages_run(res.stdout) == ["demo", "scan", "manifest", "crop", "baseline", "peer"]
    peer = json.loads((ws / paths.metrics_file("peer")).read_text())
    base = json.loads((ws / paths.metrics_file("baseline")).read_text())
    index = pd.read_csv(ws / "data/crops/index.csv", dtype=str)
    test = index[index.split == "test"].drop_duplicates(["dataset", "method", "video_id"])
    scores = pd.read_csv(ws / paths.PEER_SCORES, dtype={"video_id": str})
    assert len(scores) == len(test) == peer["test"]["n"] == base["test"]["n"]
    assert sorted(scores.video_id) == sorted(test.video_id) and (scores.n_frames == 8).all()
    assert peer["test"]["n_people"] == test.identity.nunique() == base["test"]["n_people"]
    assert peer["test"]["n_fake"] + peer["test"]["n_real"] == peer["test"]["n"]
    t = peer["test"]
    assert t["auc_ci_low"] <= t["auc"] <= t["auc_ci_high"]
    assert set(peer["test_per_method"]) == set(base["test_per_method"]) == set(peer["test_per_method_ci"])
    assert peer["weights"] == "Meso4_DF" and peer["image_size"] == 256
    bscores = pd.read_csv(ws / paths.BASELINE_SCORES, dtype={"video_id": str})
    assert sorted(bscores.video_id) == sorted(scores.video_id)
    # the peer's numbers are those of its per-video file
    from sklearn.metrics import roc_auc_score
    assert t["auc"] == pytest.approx(roc_auc_score(scores.label, scores.score))
    # a second repro runs nothing but the always-run scan
    assert stages_run(run_dvc(ws, "repro", "peer", "baseline").stdout) == ["scan"]
