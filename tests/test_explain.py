"""Grad-CAM heatmaps and the localisation metrics (pipeline/explain.py)."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from feature_cache.maps import read_feature_maps, write_feature_maps
from pipeline.errors import InputRefused
from pipeline.scoring.explain import (energy_ratio, gradcam_feature_maps, gradcam_windows, localisation_metrics,
                                      localisation_scores, overlay, pointing_game, snippet_masks)


def _tiny_model(frames=8, D=4, seed=0):
    from graph_models import MRLModel, build_encoder, build_relation
    from pipeline.params import ClipParams, EncoderParams, MaskParams, RelationParams

    torch.manual_seed(seed)
    enc = build_encoder(EncoderParams(backbone="small3d", width=4, heads=4, pretrained=None),
                        ClipParams(frames=frames, snippet_length=D))
    rel = build_relation(enc.out_dim, 4, RelationParams(hidden=8, mlp_hidden=8), MaskParams())
    return MRLModel(enc, rel).eval()


# --------------------------------------------------------------------------- metrics by hand
def _mask(S=8, box=(2, 5, 2, 5), value=255):
    m = np.zeros((S, S), np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = value
    return m


def test_pointing_game_inside_outside_flat_and_mixed():
    m = _mask()
    inside = np.zeros((8, 8))
    inside[3, 3] = 1.0
    outside = np.zeros((8, 8))
    outside[7, 0] = 1.0
    assert pointing_game(inside, m) == 1.0
    assert pointing_game(outside, m) == 0.0
    assert pointing_game(np.zeros((8, 8)), m) == 0.0            # flat map points nowhere
    assert pointing_game(np.full((8, 8), 0.3), m) == 0.0
    both = np.stack([inside, outside])
    assert pointing_game(both, np.stack([m, m])) == 0.5
    # a snippet without manipulated pixels does not count
    assert pointing_game(both, np.stack([m, np.zeros_like(m)])) == 1.0
    assert math.isnan(pointing_game(both, np.zeros((2, 8, 8), np.uint8)))


def test_mask_threshold_is_strictly_above_127_and_bool_masks_work():
    heat = np.zeros((8, 8))
    heat[3, 3] = 1.0
    assert math.isnan(pointing_game(heat, _mask(value=127)))      # 127 is not manipulated
    assert pointing_game(heat, _mask(value=128)) == 1.0
    assert pointing_game(heat, _mask(value=1) > 0) == 1.0         # bool mask used as it is
    assert pointing_game(heat, _mask(value=1), threshold=0) == 1.0


def test_energy_ratio_by_hand():
    m = _mask(box=(0, 2, 0, 2))                                   # 4 of 64 pixels
    heat = np.zeros((8, 8))
    heat[0, 0], heat[1, 1], heat[7, 7] = 2.0, 1.0, 1.0            # 3 of 4 units inside
    assert energy_ratio(heat, m) == pytest.approx(0.75)
    uniform = np.ones((8, 8))
    assert energy_ratio(uniform, m) == pytest.approx(4 / 64)      # chance level = mask area
    s = localisation_scores(np.stack([heat, uniform]), np.stack([m, m]))
    assert s["energy_inside"] == pytest.approx((0.75 + 4 / 64) / 2)
    assert s["mask_area"] == pytest.approx(4 / 64) and s["snippets"] == 2
    assert s["pointing_game"] == 0.5                              # uniform map is flat: a miss
    assert math.isnan(energy_ratio(np.zeros((8, 8)), m))          # no energy at all: not counted


def test_snippet_masks_union_and_per_frame_masks_are_reduced():
    m = np.zeros((4, 8, 8), np.uint8)                             # F = 4 frames, T = 2 snippets
    m[0, 0, 0] = 255
    m[3, 7, 7] = 255
    s = snippet_masks(m, 2)
    assert s.shape == (2, 8, 8) and s.dtype == bool
    assert s[0, 0, 0] and not s[0, 7, 7] and s[1, 7, 7] and not s[1, 0, 0]
    heat = np.zeros((2, 8, 8))
    heat[0, 0, 0] = heat[1, 7, 7] = 1.0
    assert pointing_game(heat, m) == 1.0                          # [T,S,S] heat vs [F,S,S] masks
    with pytest.raises(ValueError):
        snippet_masks(np.zeros((3, 8, 8)), 2)


# --------------------------------------------------------------------------- Grad-CAM
def test_gradcam_shapes_range_and_overlay():
    model = _tiny_model()
    x = torch.rand(2, 3, 8, 32, 32)
    h = gradcam_windows(model, x)
    assert h.shape == (2, 2, 32, 32)
    assert torch.isfinite(h).all() and h.min() >= 0 and h.max() <= 1
    assert not h.requires_grad
    hf = gradcam_windows(model, x, per="frame")
    assert hf.shape == (2, 8, 32, 32) and hf.min() >= 0 and hf.max() <= 1
    frame = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    img = overlay(frame, h[0, 0])
    assert img.size == (32, 32) and img.mode == "RGB"
    assert np.array_equal(np.asarray(overlay(frame, h[0, 0], alpha=0.0)), frame)
    assert overlay(frame, np.ones((8, 8))).size == (32, 32)      # heat resized to the frame


@pytest.mark.parametrize("backbone,extra", [("resnet18_2d", {}), ("mobilenet_v2", {"freeze_blocks": 3})])
def test_gradcam_of_a_per_frame_backbone_maps_each_frame_to_its_place(backbone, extra):
    """resnet18_2d and mobilenet_v2 see frames one by one (laid out again as [B, C, D, h, w]): with one image
    repeated inside each snippet, different images across snippets and windows, and STA off (vertices average
    all positions, so every frame of a snippet gets the same gradient), the D maps of a snippet must be equal."""
    from graph_models import MRLModel, build_encoder, build_relation
    from pipeline.params import ClipParams, EncoderParams, MaskParams, RelationParams

    torch.manual_seed(0)
    enc = build_encoder(EncoderParams(backbone=backbone, heads=4, pretrained=None, sta=False, **extra),
                        ClipParams(frames=8, snippet_length=4))
    model = MRLModel(enc, build_relation(enc.out_dim, 4, RelationParams(hidden=8, mlp_hidden=8), MaskParams())).eval()
    images = torch.rand(2, 2, 3, 64, 64)                               # [window, snippet, 3, S, S]
    x = images[:, :, :, None].expand(2, 2, 3, 4, 64, 64).permute(0, 2, 1, 3, 4, 5).reshape(2, 3, 8, 64, 64)
    h = gradcam_windows(model, x)
    assert h.shape == (2, 2, 64, 64) and h.min() >= 0 and h.max() <= 1
    hf = gradcam_windows(model, x, per="frame").reshape(2, 2, 4, 64, 64)
    assert hf.shape == (2, 2, 4, 64, 64) and hf.flatten(2).amax(-1).gt(0).any()
    for b in range(2):
        for t in range(2):
            for d in range(1, 4):
                torch.testing.assert_close(hf[b, t, d], hf[b, t, 0], atol=1e-5, rtol=0)


def _masked_crops(root, S=32, F=8):
    """A crop folder with one fake video (2 windows, a 16 x 16 mask in the middle) and one real one, both test."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for vid, label in (("fake0", 1), ("real0", 0)):
        with h5py.File(root / f"{vid}.h5", "w") as f:
            f["clips"] = rng.integers(0, 256, (2, F, S, S, 3), dtype=np.uint8)
            if label:
                m = np.zeros((2, F, S, S), np.uint8)
                m[:, :, 8:24, 8:24] = 255
                f["masks"] = m
        rows += [{"dataset": "d", "method": "swap" if label else "real", "video_id": vid, "label": label,
                  "split": "test", "identity": vid, "file": f"{vid}.h5", "window": w} for w in range(2)]
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root


def test_localisation_metrics_over_a_crop_split(tmp_path):
    _masked_crops(tmp_path)
    model = _tiny_model()
    r = localisation_metrics(model.encoder, model.relation, tmp_path, "test", batch_size=3)
    assert r["windows"] == 2 and r["videos"] == 1 and r["snippets"] == 4      # fakes only, 2 windows x T=2
    assert 0.0 <= r["pointing_game"] <= 1.0 and 0.0 <= r["energy_inside"] <= 1.0
    assert r["mask_area"] == pytest.approx(0.25)
    assert set(r["per_method"]) == {"swap"} and r["mask_threshold"] == 127
    empty = localisation_metrics(model.encoder, model.relation, tmp_path, "val")
    assert empty["windows"] == 0 and empty["pointing_game"] is None and "note" in empty


# --------------------------------------------------------------------------- Grad-CAM from the cached backbone maps
@pytest.mark.parametrize("backbone", ["small3d", "mobilenet_v2"])
def test_gradcam_from_the_backbone_maps_equals_gradcam_from_the_clips(backbone):
    """The reference is captum on the whole model (gradcam_windows); from F_0 only the STA and the relation
    learner run, and the heatmaps must be the same (float32 round-off)."""
    from graph_models import MRLModel, build_encoder, build_relation
    from pipeline.params import ClipParams, EncoderParams, MaskParams, RelationParams

    torch.manual_seed(0)
    enc = build_encoder(EncoderParams(backbone=backbone, width=4, heads=4, pretrained=None, freeze_blocks=3),
                        ClipParams(frames=8, snippet_length=4))
    model = MRLModel(enc, build_relation(enc.out_dim, 4, RelationParams(hidden=8, mlp_hidden=8), MaskParams())).eval()
    x = torch.rand(3, 3, 8, 32, 32)
    with torch.no_grad():
        f0 = enc.feature_map(x)
        assert torch.equal(enc.from_feature_map(f0, 3).vertices, enc(x).vertices)   # forward = the two halves
    maps = f0.reshape(3, 2, *f0.shape[1:])                                           # [B, T, C, d, h, w]
    for per in ("snippet", "frame"):
        want = gradcam_windows(model, x, per=per)
        got = gradcam_feature_maps(model, maps, size=32, per=per)
        assert got.shape == want.shape and want.flatten(2).amax(-1).gt(0).any()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected maps"):
        gradcam_feature_maps(model, f0, size=32)


def _encoder_file(path):
    from graph_models import build_encoder
    from pipeline.learning.encoder import ENCODER_FORMAT
    from pipeline.params import ClipParams, EncoderParams
    from pipeline.runtime import atomic_torch_save

    e, c = EncoderParams(backbone="small3d", width=4, heads=4, pretrained=None), ClipParams(frames=8, snippet_length=4)
    torch.manual_seed(0)
    enc = build_encoder(e, c)
    atomic_torch_save({"format": ENCODER_FORMAT, "state_dict": enc.state_dict(), "encoder": e.model_dump(),
                       "clip": c.model_dump(), "image_size": 32, "out_dim": int(enc.out_dim), "heads": 4}, path)
    return path


def test_localisation_from_the_maps_cache_features_writes(tmp_path):
    """cache_feature_maps keeps F_0 of the test fakes with masks; localisation from them equals localisation
    from the clips; a file of another encoder, a window it lacks and a file of another kind are refused."""
    from graph_models import build_relation
    from pipeline.model_io import load_encoder
    from pipeline.params import MaskParams, RelationParams
    from pipeline.runtime import sha256_file
    from pipeline.scoring.features import cache_feature_maps

    crops = _masked_crops(tmp_path / "crops")
    enc_file = _encoder_file(tmp_path / "encoder.pt")
    out = tmp_path / "maps.h5"
    r = cache_feature_maps(str(crops), enc_file, out, device="cpu", batch_size=3)
    assert r["windows"] == 2 and r["shape"][0] == 2                       # 2 fake windows of T = 2 snippets
    again = cache_feature_maps(str(crops), enc_file, tmp_path / "again.h5", device="cpu", batch_size=3)
    assert again["windows"] == 2 and (tmp_path / "again.h5").read_bytes() == out.read_bytes()   # same bytes
    maps = read_feature_maps(out, sha256_file(enc_file))
    assert maps.keys == [("d", "swap", "fake0", 0), ("d", "swap", "fake0", 1)] and maps.split == "test"
    encoder, _ = load_encoder(enc_file, torch.device("cpu"))
    torch.manual_seed(1)
    relation = build_relation(encoder.out_dim, 4, RelationParams(hidden=8, mlp_hidden=8), MaskParams()).eval()
    a = localisation_metrics(encoder, relation, crops, "test", batch_size=3)
    b = localisation_metrics(encoder, relation, crops, "test", batch_size=3, maps=maps)
    assert (a["windows"], a["snippets"], a["mask_area"]) == (b["windows"], b["snippets"], b["mask_area"]) == (2, 4, 0.25)
    assert b["pointing_game"] == a["pointing_game"]
    assert b["energy_inside"] == pytest.approx(a["energy_inside"], abs=1e-6)
    assert "cached backbone maps" in b["method"] and "clips" in a["method"]

    with pytest.raises(InputRefused, match=r"maps\.h5: written from another encoder") as e:
        read_feature_maps(out, "0" * 64)
    assert "cache_features" in e.value.fix
    write_feature_maps(tmp_path / "one.h5", maps.maps[:1], maps.keys[:1], maps.encoder_sha256, "test")
    with pytest.raises(InputRefused, match=r"no window \('d', 'swap', 'fake0', 1\)"):
        localisation_metrics(encoder, relation, crops, "test", maps=read_feature_maps(tmp_path / "one.h5"))
    with pytest.raises(InputRefused, match="fake0.h5: not a feature-maps file"):
        read_feature_maps(crops / "fake0.h5")
    with pytest.raises(ValueError, match="duplicate window keys"):
        write_feature_maps(tmp_path / "dup.h5", maps.maps, [maps.keys[0]] * 2, maps.encoder_sha256, "test")
