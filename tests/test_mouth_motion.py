"""scripts/mouth_motion.py: the mouth box's grey level per frame by hand, the motion statistic, and the AUC over
a real crop folder (HDF5 files in the crop stage's layout) with its refusals."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import load_script, write_crop_dir

mm = load_script("mouth_motion")
LM = np.array([[10, 10], [22, 10], [16, 16], [12, 22], [20, 22]], np.float32)   # mouth corners (12,22), (20,22)


def _clip(levels, size: int = 32) -> np.ndarray:
    """Frames of grey 100 with the mouth box (x 11..20, y 19..24 for LM) at the given grey levels."""
    clip = np.full((len(levels), size, size, 3), 100, np.uint8)
    for t, v in enumerate(levels):
        clip[t, 19:25, 11:21] = v
    return clip


def test_the_series_is_the_mean_grey_level_of_the_box_between_the_mouth_corners():
    # corners 8 px apart: half width 4.8 -> x 11..20 (round(16 - 4.8) = 11, round(20.8) = 21 exclusive),
    # half height 2.8 -> y 19..24 (round(19.2) = 19, round(24.8) = 25 exclusive): exactly the painted box
    clip = _clip([50, 60, 70])
    clip[1, 19, 11] = 120                          # one pixel of frame 1: its mean moves by 60 / 60 px = 1.0
    lms = np.broadcast_to(LM, (3, 5, 2))
    assert mm.mouth_series(clip, lms).tolist() == pytest.approx([50.0, 61.0, 70.0])
    clip[1, 18, 11] = 255                          # just outside the box: no change
    assert mm.mouth_series(clip, lms).tolist() == pytest.approx([50.0, 61.0, 70.0])


def test_an_oscillating_mouth_moves_more_than_a_steady_change_of_expression():
    t = np.arange(32)
    lms = np.broadcast_to(LM, (32, 5, 2))
    speech = 80 + 30 * np.clip(np.sin(2 * np.pi * t / 10), 0, None)          # opens and closes every 10 frames
    smile = np.linspace(80, 110, 32)                                          # the same range, once
    a, b = mm.mouth_motion(_clip(speech.round()), lms), mm.mouth_motion(_clip(smile.round()), lms)
    assert a > 5 * b
    steps = np.diff(speech.round())
    assert a == pytest.approx(steps.std())                                    # the statistic, by its definition


def test_the_auc_over_a_crop_folder_and_its_refusals(tmp_path, capsys):
    t = np.arange(16)
    osc = lambda phase: _clip((80 + 30 * np.clip(np.sin(2 * np.pi * t / 8 + phase), 0, None)).round())
    steady = lambda level: _clip(np.full(16, level))
    videos = [("test", "real", 0, steady(90)[None]), ("test", "real", 0, _clip(np.linspace(80, 95, 16).round())[None]),
              ("test", "mouth_reenact", 1, osc(0.0)[None]), ("test", "mouth_reenact", 1, np.stack([osc(1.0), osc(2.0)])),
              ("test", "sbi", 1, steady(70)[None]), ("val", "mouth_reenact", 1, steady(90)[None])]
    root = write_crop_dir(tmp_path / "crops", videos, landmarks=LM)
    v = mm.video_values(root, "test", "mouth_reenact")
    assert sorted(v.video_id) == ["v000", "v001", "v002", "v003"]              # sbi and the val split left out
    assert v.set_index("video_id").value["v000"] == 0.0                       # a still mouth: no motion
    assert mm.main(["--crops", str(root), "--bootstrap", "50"]) == 0
    assert "(grey level): mouth_reenact against real, test split: AUC 1.000 [1.000, 1.000] on 2 fake + 2 real videos" \
        in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no 'faceswap' videos in the test split .* families: mouth_reenact, sbi"):
        mm.main(["--crops", str(root), "--method", "faceswap"])
    with pytest.raises(SystemExit, match="index.csv is not there; run the crop stage"):
        mm.main(["--crops", str(tmp_path / "nothing")])


def test_the_mouth_cell_by_hand():
    # mouth centre (16, 22) in a 32 px crop: on a 4 x 4 map (8 px cells) row 22 // 8 = 2, column 16 // 8 = 2;
    # on a 2 x 2 map row 1, column 1; a centre past the edge is clipped to the last cell
    lms = np.stack([LM, LM + [15, -20]])                                      # second centre (31, 2)
    assert mm.mouth_cell(lms, 32, 4).tolist() == [[2, 2], [0, 3]]
    assert mm.mouth_cell(lms, 32, 2).tolist() == [[1, 1], [0, 1]]


def test_feature_motion_reads_the_cell_under_the_mouth():
    """Through real ImageNet MobileNetV2 modules: a still clip gives 0; a change painted in the mouth box moves
    the mouth cell's features more than the same change painted in a far corner of the crop."""
    from graph_models.backbones import MobileNetV2Backbone
    modules = MobileNetV2Backbone("auto").features[:4].eval()                 # stride 4: 8 x 8 cells on 32 px
    lms = np.broadcast_to(LM, (6, 5, 2))
    assert mm.feature_motion(_clip([90] * 6), lms, modules) == 0.0
    levels = [60, 120, 60, 120, 60, 120]
    corner = np.full((6, 32, 32, 3), 100, np.uint8)
    for t, v in enumerate(levels):
        corner[t, 0:6, 0:10] = v
    at_mouth = mm.feature_motion(_clip(levels), lms, modules)
    assert at_mouth > 0.1 and at_mouth > 5 * mm.feature_motion(corner, lms, modules)
    with pytest.raises(SystemExit, match="--features 15: give 1 to 14"):
        mm.main(["--features", "15"])
