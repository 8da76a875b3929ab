"""Eq. 3 and the STA module (graph_models/sta.py) against hand-made references."""
import math

import pytest
import torch
from torch import nn

from graph_models.sta import (STA, attention_features, frame_change, motion_pooling, normalized_average_pooling,
                              normalized_max_pooling, pooled_sum, vertices_from_attention)

torch.set_num_threads(1)

# F_0: B=1, C=2, d=1, h=w=2;  F_A: N=2 maps of 2x2
F0 = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]]],
                    [[[0.0, 1.0], [0.0, -1.0]]]]])
FA = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]],
                    [[0.0, 1.0], [1.0, 1.0]]]])


def test_eq3_average_pooling_by_hand():
    # head 0 keeps position (0,0): sum = (1, 0) -> (1, 0)
    # head 1 keeps (0,1),(1,0),(1,1): sum = (2+3+4, 1+0-1) = (9, 0) -> (1, 0)
    # make head 1 non-trivial with a weighted map
    fa = FA.clone()
    fa[0, 1, 1, 1] = 0.0                               # head 1: sum = (2+3, 1+0) = (5, 1)
    expected = torch.tensor([[[1.0, 0.0], [5 / math.sqrt(26), 1 / math.sqrt(26)]]])
    assert torch.allclose(vertices_from_attention(F0, fa, "avg"), expected)
    assert torch.allclose(normalized_average_pooling(attention_features(F0, fa)), expected)


def test_eq3_loops_reference_random():
    g = torch.Generator().manual_seed(0)
    f0 = torch.randn(2, 3, 2, 3, 3, generator=g)
    fa = torch.rand(2, 4, 3, 3, generator=g)
    ref = torch.empty(2, 4, 3)
    for b in range(2):
        for n in range(4):
            s = torch.zeros(3)
            for t in range(2):
                for i in range(3):
                    for j in range(3):
                        s += f0[b, :, t, i, j] * fa[b, n, i, j]   # F = F_0 ⊙ F_A, summed over positions
            ref[b, n] = s / s.norm()
    assert torch.allclose(vertices_from_attention(f0, fa, "avg"), ref, atol=1e-6)
    assert torch.allclose(vertices_from_attention(f0, fa, "avg").norm(dim=-1), torch.ones(2, 4))


def test_max_pooling_by_hand():
    # head 0: max over positions of F_0*A: channel 0 max(1,0,0,0)=1, channel 1 max(0,0,0,0)=0
    # head 1: channel 0 max(0,2,3,4)=4, channel 1 max(0,1,0,-1)=1
    expected = torch.tensor([[[1.0, 0.0], [4 / math.sqrt(17), 1 / math.sqrt(17)]]])
    assert torch.allclose(vertices_from_attention(F0, FA, "max"), expected)
    assert torch.allclose(normalized_max_pooling(attention_features(F0, FA)), expected)


def test_attention_features_shape_and_broadcast():
    f = attention_features(torch.ones(1, 5, 3, 2, 2), torch.rand(1, 4, 2, 2))
    assert f.shape == (1, 4, 5, 3, 2, 2)


@pytest.mark.parametrize("attention", ["spatiotemporal", "spatial"])
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_sta_shapes(attention, pooling):
    sta = STA(8, heads=3, attention=attention, pooling=pooling)
    v, a = sta(torch.randn(2, 8, 4, 5, 5))
    assert v.shape == (2, 3, 8) and a.shape == (2, 3, 5, 5)
    assert (a >= 0).all()                                              # ReLU maps
    assert torch.allclose(v.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    convs = {type(m) for m in sta.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))}
    assert convs == ({nn.Conv3d} if attention == "spatiotemporal" else {nn.Conv2d})
    v.sum().backward()


def test_sta_blocks_are_paper_blocks():
    sta = STA(8, heads=3)
    kinds = [type(m) for m in sta.blocks.modules() if not isinstance(m, nn.Sequential)]
    assert kinds == [nn.Conv3d, nn.BatchNorm3d, nn.ReLU] * 2
    assert all(m.kernel_size == (3, 3, 3) for m in sta.blocks.modules() if isinstance(m, nn.Conv3d))


def test_spatial_attention_averages_per_frame_maps():
    sta = STA(4, heads=2, attention="spatial").eval()
    f0 = torch.randn(1, 4, 3, 5, 5)
    per_frame = torch.stack([sta.blocks(f0[:, :, t]) for t in range(3)], 1).mean(1)
    assert torch.allclose(sta.attention_maps(f0), per_frame, atol=1e-6)


def test_sta_off_gives_maps_of_ones():
    sta = STA(4, heads=3, enabled=False)
    f0 = torch.randn(2, 4, 2, 3, 3)
    v, a = sta(f0)
    assert torch.equal(a, torch.ones(2, 3, 3, 3))
    ref = torch.nn.functional.normalize(f0.flatten(2).sum(-1), dim=-1)
    assert torch.allclose(v, ref.unsqueeze(1).expand(-1, 3, -1), atol=1e-6)
    assert sum(p.numel() for p in sta.parameters()) == 0


def test_bad_options():
    with pytest.raises(ValueError):
        STA(4, 2, attention="temporal")
    with pytest.raises(ValueError):
        STA(4, 2, pooling="median")


def test_motion_pooling_by_hand():
    # B=1, C=2, d=3, h=1, w=2; frames t=0,1,2 at positions (0,0) and (0,1):
    #   channel 0: (0, 0) -> (1, 0) -> (1, 2)      changes |.|: t=1 (1, 0), t=2 (0, 2)
    #   channel 1: (5, 5) -> (5, 5) -> (2, 5)      changes |.|: t=1 (0, 0), t=2 (3, 0)
    f0 = torch.tensor([[[[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 2.0]]],
                        [[[5.0, 5.0]], [[5.0, 5.0]], [[2.0, 5.0]]]]])
    assert torch.equal(frame_change(f0), torch.tensor([[[[[1.0, 0.0]], [[0.0, 2.0]]],
                                                       [[[0.0, 0.0]], [[3.0, 0.0]]]]]))
    # head 0 weighs position (0,0) by 1: change sums (1+0, 0+3) = (1, 3); Eq. 3's sum (0+1+1, 5+5+2) = (2, 12)
    # head 1 weighs (0,1) by 2: change sums (2*(0+2), 0) = (4, 0); Eq. 3's sum (2*(0+0+2), 2*(5+5+5)) = (4, 30)
    fa = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    assert torch.equal(pooled_sum(f0, fa), torch.tensor([[[2.0, 12.0], [4.0, 30.0]]]))
    assert torch.equal(pooled_sum(frame_change(f0), fa), torch.tensor([[[1.0, 3.0], [4.0, 0.0]]]))
    expected = torch.tensor([[[1 / math.sqrt(148), 3 / math.sqrt(148)], [4 / math.sqrt(916), 0.0]]])
    assert torch.allclose(motion_pooling(f0, fa), expected)
    # the scale of the maps and of the features cancels; a still snippet, and a one-frame one, give zero rows
    assert torch.allclose(motion_pooling(3 * f0, 5 * fa), expected)
    assert torch.equal(motion_pooling(f0, fa, pooled_sum(f0, fa)), motion_pooling(f0, fa))
    assert torch.equal(motion_pooling(f0[:, :, :1].expand(-1, -1, 3, -1, -1), fa), torch.zeros(1, 2, 2))
    assert torch.equal(motion_pooling(f0[:, :, :1], fa), torch.zeros(1, 2, 2))


def test_sta_motion_appends_the_motion_half():
    torch.manual_seed(0)
    sta = STA(4, 3, motion=True).eval()
    assert sta.out_channels == 8 and "motion=True" in repr(sta)
    f0 = torch.randn(2, 4, 3, 5, 5)
    v, maps = sta(f0)
    assert v.shape == (2, 3, 8)
    assert torch.allclose(v[..., :4], vertices_from_attention(f0, maps, "avg"))
    assert torch.allclose(v[..., 4:], motion_pooling(f0, maps))
    assert STA(4, 3).out_channels == 4
    sta.pooling = "max"                                 # max pooling: its own Eq. 3 half, the same motion half
    v, maps = sta(f0)
    assert torch.allclose(v[..., :4], vertices_from_attention(f0, maps, "max"))
    assert torch.allclose(v[..., 4:], motion_pooling(f0, maps))


def test_an_sta_pickled_before_motion_existed_unpickles_without_it():
    """An MLflow model of an older run is a pickle of the module; its STA has no ``motion`` attribute."""
    torch.manual_seed(0)
    sta = STA(4, 3).eval()
    state = {k: v for k, v in sta.__dict__.items() if k != "motion"}
    old = STA.__new__(STA)
    old.__setstate__(state)
    f0 = torch.randn(2, 4, 3, 5, 5)
    assert old.motion is False and old.out_channels == 4
    assert torch.equal(old(f0)[0], sta(f0)[0])
