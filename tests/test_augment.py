"""Training augmentation and on-the-fly self-blended pseudo-fakes (pipeline.ingest.augment)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_crop_dir
from pipeline.ingest.augment import PSEUDO_FAKE_METHOD, AugmentedClips, augment_clip
from pipeline.ingest.clips import ClipDataset
from pipeline.ingest.demo.faces import TEMPLATE

S, F = 48, 8


def _face_clip(seed: int) -> np.ndarray:
    """A smooth synthetic 'face' (bright ellipse on a darker textured background), static over F frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    bg = rng.integers(20, 90, (S // 8, S // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.float32)
    face = (((yy - S * 0.55) / (S * 0.38)) ** 2 + ((xx - S / 2) / (S * 0.3)) ** 2) < 1
    img = np.where(face[..., None], np.array([200, 160, 140], np.float32) + rng.normal(0, 6, (S, S, 3)), bg)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[None], F, 0)


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    vids = [("train", "real", 0, _face_clip(0)[None]), ("train", "faceswap", 1, _face_clip(1)[None]),
            ("train", "real", 0, _face_clip(2)[None])]
    return write_crop_dir(tmp_path_factory.mktemp("crops"), vids, landmarks=TEMPLATE * (S / 112.0))


def test_augment_draws_once_per_window_so_a_static_clip_stays_static():
    clip = _face_clip(3)
    for seed in range(8):
        out = augment_clip(clip, np.random.default_rng(seed))
        assert out.shape == clip.shape and out.dtype == np.uint8
        assert (out == out[:1]).all(), "augmentation must not flicker (one draw per window)"
    assert any((augment_clip(clip, np.random.default_rng(s)) != clip).any() for s in range(4))


def test_draws_repeat_for_a_seed_and_epoch_and_change_with_the_epoch(crops):
    ds = AugmentedClips(ClipDataset(crops, "train", with_landmarks=True), seed=5, pseudo_fake_prob=0.5, augment=True)
    a = [ds[i]["clip"] for i in range(len(ds))]
    b = [ds[i]["clip"] for i in range(len(ds))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ds.set_epoch(1)
    assert any(not torch.equal(x, ds[i]["clip"]) for i, x in enumerate(a))


def test_pseudo_fakes_turn_reals_into_labelled_blends_inside_the_face(crops):
    plain = ClipDataset(crops, "train", with_landmarks=True)
    ds = AugmentedClips(plain, seed=0, pseudo_fake_prob=1.0, augment=False)
    items = [ds[i] for i in range(len(ds))]
    assert [(it["label"], it["method"]) for it in items] == [(1, PSEUDO_FAKE_METHOD), (1, "faceswap"),
                                                             (1, PSEUDO_FAKE_METHOD)]
    assert torch.equal(items[1]["clip"], plain[1]["clip"])            # real fakes are left alone
    diff = (items[0]["clip"].float() - plain[0]["clip"].float()).abs().mean((0, 3))   # [S, S]
    c, edge = diff[S // 3: 2 * S // 3, S // 3: 2 * S // 3].mean(), diff[:, :4].mean()
    assert c > 2.0 and c > 4 * edge, f"the blend must change the face (centre {c:.2f}) more than the edge ({edge:.2f})"
    assert "landmarks" not in items[0]


def test_pseudo_fakes_without_landmarks_name_the_video(tmp_path):
    crops = write_crop_dir(tmp_path, [("train", "real", 0, _face_clip(0)[None])])
    ds = AugmentedClips(ClipDataset(crops, "train", with_landmarks=True), seed=0, pseudo_fake_prob=1.0)
    with pytest.raises(ValueError, match="demo/real/v000 has none"):
        ds[0]


def test_pseudo_fakes_keep_the_frozen_memo_and_its_numbers(tmp_path):
    """With pseudo-fakes (no augmentation) every clip that is not turned fake comes back unchanged the next
    epoch, so train_encoder keeps the frozen-module memo: the same weights as without it, fewer frames through
    the frozen modules. Augmentation makes every clip new: no memo."""
    import yaml

    from pipeline.learning.encoder import memo_bytes, train_encoder
    from pipeline.params import parse_params

    root = Path(__file__).resolve().parents[1]
    vids = [(split, "faceswap" if i % 2 else "real", i % 2, _face_clip(10 * (split == "val") + i)[None])
            for split, n in (("train", 6), ("val", 2)) for i in range(n)]
    crops = write_crop_dir(tmp_path / "crops", vids, landmarks=TEMPLATE * (S / 112.0))
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw.update(seed=0, device="cpu", clip={"frames": F, "snippet_length": 4})
    raw["encoder"].update(backbone="mobilenet_v2", pretrained=None, freeze_blocks=2, heads=4)
    raw["train_encoder"].update(epochs=2, batch_size=4, pseudo_fake_prob=0.5, augment=False)
    raw["train_encoder"]["relation"].update(hidden=8, mlp_hidden=8)

    frames: list[int] = []   # frames entering the backbone's first (frozen) conv, over every run
    def count(module, args, out):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3 and module.out_channels == 32:
            frames.append(int(args[0].shape[0]))
    runs = {}
    for mb in (0, 64):
        raw["train_encoder"]["frozen_memo_mb"] = mb
        p = parse_params(raw)
        assert memo_bytes(p.train_encoder) == mb * 2**20
        handle = torch.nn.modules.module.register_module_forward_hook(count)
        try:
            runs[mb] = train_encoder(p.encoder, p.clip, p.train_encoder, crops, tmp_path / f"run{mb}", seed=0,
                                     device="cpu", image_size=S)
        finally:
            handle.remove()
        runs[mb] = (runs[mb], sum(frames))
        frames.clear()
    (off, n_off), (on, n_on) = runs[0], runs[64]
    ref, got = off.model.state_dict(), on.model.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)                      # the same numbers, memo or not
    assert n_on < n_off, (n_on, n_off)                                         # ... with fewer frames computed
    raw["train_encoder"]["augment"] = True
    assert memo_bytes(parse_params(raw).train_encoder) == 0
