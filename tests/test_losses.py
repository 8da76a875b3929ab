"""Eq. 4, 5, 11, 12 and the authors'-code variants (graph_models/losses.py)."""
import math

import pytest
import torch

from graph_models.losses import (attention_cosine_loss, attention_l1_consistency_loss,
                                 classification_loss, mrl_loss, orthogonal_diversity_loss,
                                 temporal_consistency_loss)
from graph_models.mrl import EncoderOutput

torch.set_num_threads(1)

I2 = [[1.0, 0.0], [0.0, 1.0]]
SAME = [[1.0, 0.0], [1.0, 0.0]]
SWAP = [[0.0, 1.0], [1.0, 0.0]]
UP = [[0.0, 1.0], [0.0, 1.0]]


def test_eq4_by_hand():
    # t=0: V V' = I -> 0;  t=1: V V' = [[1,1],[1,1]] -> ||[[0,1],[1,0]]||_F^2 = 2;  mean over T = 1
    v = torch.tensor([[I2, SAME]])
    assert torch.isclose(orthogonal_diversity_loss(v), torch.tensor(1.0))


def test_eq4_reference_random_batch():
    v = torch.nn.functional.normalize(torch.randn(3, 4, 5, 6), dim=-1)
    ref = torch.stack([torch.stack([torch.linalg.matrix_norm(v[b, t] @ v[b, t].T - torch.eye(5)) ** 2
                                    for t in range(4)]).mean() for b in range(3)]).mean()
    assert torch.isclose(orthogonal_diversity_loss(v), ref)


def test_eq5_by_hand():
    # t0 -> t1: vertex 0 moves by sqrt(2), vertex 1 stays; t1 -> t2: vertex 1 moves by sqrt(2)
    # L_tc = (1/N) * (sqrt2 + sqrt2) = sqrt(2)
    v = torch.tensor([[I2, UP, SWAP]])
    assert torch.isclose(temporal_consistency_loss(v), torch.tensor(math.sqrt(2.0)))


def test_eq5_reference_and_single_snippet():
    v = torch.randn(2, 3, 4, 5)
    ref = torch.stack([sum((v[b, t, n] - v[b, t - 1, n]).norm() for t in range(1, 3) for n in range(4)) / 4
                       for b in range(2)]).mean()
    assert torch.isclose(temporal_consistency_loss(v), ref)
    assert temporal_consistency_loss(v[:, :1]) == 0


def test_cosine_variant_by_hand():
    # maps [1,0,0,0] and [1,1,0,0]: cosine 1/sqrt(2) for both ordered pairs
    a = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]]]).unsqueeze(0)   # [1,1,2,2,2]
    assert torch.isclose(attention_cosine_loss(a), torch.tensor(1 / math.sqrt(2.0)))
    orth = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]).unsqueeze(0)
    assert attention_cosine_loss(orth) == 0


def test_l1_variant_by_hand():
    a = torch.tensor([[[[[0.0, 1.0]]], [[[1.0, 1.0]]]]])              # [B=1, T=2, N=1, 1, 2]
    assert torch.isclose(attention_l1_consistency_loss(a), torch.tensor(0.5))
    assert attention_l1_consistency_loss(a[:, :1]) == 0


def test_eq11_cross_entropy_by_hand():
    logits, y = torch.tensor([0.3, -1.2]), torch.tensor([1, 0])
    p = torch.sigmoid(logits)
    ref = -(torch.log(p[0]) + torch.log(1 - p[1])) / 2
    assert torch.isclose(classification_loss(logits, y), ref)


def test_eq12_total_and_switches():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(2, 3, 4, 5), dim=-1)
    att = torch.rand(2, 3, 4, 2, 2)
    enc = EncoderOutput(v, att)
    logits, y = torch.tensor([0.5, -0.5]), torch.tensor([1, 1])
    out = mrl_loss(logits, y, enc, 0.75, 0.75)
    ce, od, tc = classification_loss(logits, y), orthogonal_diversity_loss(v), temporal_consistency_loss(v)
    assert torch.isclose(out["total"], ce + 0.75 * od + 0.75 * tc)
    assert torch.isclose(out["od"], od) and torch.isclose(out["tc"], tc) and torch.isclose(out["ce"], ce)
    assert torch.isclose(mrl_loss(logits, y, enc, 0.0, 0.75)["total"], ce + 0.75 * tc)        # w/o L_od
    assert torch.isclose(mrl_loss(logits, y, enc, 0.75, 0.0)["total"], ce + 0.75 * od)        # w/o L_tc
    code = mrl_loss(logits, y, enc, 1.0, 1.0, "cosine", "l1")
    assert torch.isclose(code["total"], ce + attention_cosine_loss(att) + attention_l1_consistency_loss(att))
    with pytest.raises(ValueError):
        mrl_loss(logits, y, enc, od_variant="gram")
    with pytest.raises(ValueError):
        mrl_loss(logits, y, enc, tc_variant="l2")


def test_od_pairs_reduction_is_the_sum_divided_by_the_ordered_pairs():
    torch.manual_seed(3)
    v = torch.nn.functional.normalize(torch.randn(2, 3, 5, 7), dim=-1)
    s = orthogonal_diversity_loss(v, "sum")
    assert torch.isclose(orthogonal_diversity_loss(v, "pairs"), s / 20)
    # by hand for collinear unit vertices: every off-diagonal cosine is 1 -> sum N(N-1), pairs 1
    ones = torch.nn.functional.normalize(torch.ones(1, 1, 5, 4), dim=-1)
    assert torch.isclose(orthogonal_diversity_loss(ones, "sum"), torch.tensor(20.0))
    assert torch.isclose(orthogonal_diversity_loss(ones, "pairs"), torch.tensor(1.0))
    with pytest.raises(ValueError):
        orthogonal_diversity_loss(v, "mean")
