"""``evaluate.head: joint``: the test metrics of Algorithm 2's jointly trained model (the encoder with the
relation head trained together with it, kept in models/encoder.pt) instead of the relation stage's learner.

A tiny encoder is really trained (train_encoder), written as the stage writes it, its features cached
(cache_features); ``evaluate`` with ``head: joint`` must give, video by video, the scores of the trained
model itself run end to end on the test crops, and the threshold of its validation EER.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import write_crop_dir
from pipeline.ingest.clips import window_loader
from pipeline.learning.encoder import encoder_payload, predict_windows, train_encoder
from pipeline.model_io import load_joint_head
from pipeline.params import parse_params
from pipeline.runtime import atomic_torch_save
from pipeline.scoring.evaluation import evaluate
from pipeline.scoring.features import cache_features
from pipeline.scoring.metrics import binary_metrics, threshold_at_eer, video_scores

F, S = 8, 32
ROOT = Path(__file__).resolve().parents[1]


def _clip(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A blocky texture; the fakes flicker in a square (learnable in a few epochs)."""
    big = np.kron(rng.integers(40, 216, (S // 4, S // 4, 3)).astype(np.float32), np.ones((4, 4, 1)))
    frames = [big + (np.pad(np.full((12, 12, 3), 40.0 if t % 2 else -40.0), ((10, 10), (10, 10), (0, 0)))
                     if fake else 0.0) for t in range(F)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)[None]


def _params(**evaluate):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(seed=0, device="cpu", clip={"frames": F, "snippet_length": 4})
    raw["crop"]["image_size"] = S
    raw["encoder"].update(backbone="small3d", width=4, heads=3, pretrained=None)
    raw["train_encoder"].update(epochs=3, batch_size=8, lr=3e-3)
    raw["train_encoder"]["relation"].update(hidden=8, mlp_hidden=8)
    raw["evaluate"].update(bootstrap=50, **evaluate)
    return parse_params(raw)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("joint")
    rng = np.random.default_rng(0)
    vids = [(split, "flicker" if i % 2 else "real", i % 2, _clip(rng, bool(i % 2)))
            for split, n in (("train", 16), ("val", 8), ("test", 8)) for i in range(n)]
    crops = write_crop_dir(root / "crops", vids)
    p = _params(head="joint")
    res = train_encoder(p.encoder, p.clip, p.train_encoder, crops, root / "run", seed=p.seed, device=p.device,
                        image_size=p.crop.image_size)
    atomic_torch_save(encoder_payload(res, p.crop), root / "encoder.pt")
    cache_features(str(crops), root / "encoder.pt", root / "features.h5", seed=p.seed, device=p.device,
                   batch_size=p.train_encoder.batch_size, num_workers=p.train_encoder.num_workers)
    return p, res, root, crops


def _reference(model, crops, split):
    """The jointly trained model end to end (crops -> encoder -> its own head), as train_encoder validates it."""
    return video_scores(predict_windows(model, window_loader(str(crops), split, 4, 0), torch.device("cpu")))


def test_joint_head_reports_the_jointly_trained_models_own_scores(work):
    p, res, root, crops = work
    ev = evaluate(p.evaluate, root / "features.h5", root / "no-relation.pt", root / "encoder.pt", crops, seed=p.seed, device=p.device)
    assert ev.result["head"] == "joint"
    ref = _reference(res.model, crops, "test")
    got = ev.videos.set_index("video_id").loc[ref["video_id"]]
    assert len(got) == len(ref) == 8
    assert np.allclose(got["score"].to_numpy(), ref["score"].to_numpy(), atol=1e-5)
    val = _reference(res.model, crops, "val")
    thr = threshold_at_eer(val["label"].to_numpy(), val["score"].to_numpy())
    assert ev.result["test"]["threshold"] == pytest.approx(thr, abs=1e-6)
    want = binary_metrics(ref["label"].to_numpy(), ref["score"].to_numpy(), thr)
    for k in ("auc", "acc", "eer", "ap"):
        assert ev.result["test"][k] == pytest.approx(want[k], abs=1e-9), k
    assert ev.result["test"]["auc_ci_low"] is not None and set(ev.result["per_method"]) >= {"demo/flicker"}


def test_joint_head_is_the_head_trained_with_the_encoder_not_a_new_one(work):
    """The stored head's weights are those of the trained model's relation head, mask settings included."""
    p, res, root, _ = work
    head, meta = load_joint_head(root / "encoder.pt")
    trained = res.model.relation.state_dict()
    assert set(head.state_dict()) == set(trained)
    assert all(torch.equal(v, trained[k]) for k, v in head.state_dict().items())
    assert meta["head_mask"] == p.train_encoder.mask.model_dump() and not head.training


def test_joint_head_explicit_threshold_and_missing_files(work, tmp_path):
    p, _, root, crops = work
    q = _params(head="joint", threshold=0.5)
    ev = evaluate(q.evaluate, root / "features.h5", root / "no-relation.pt", root / "encoder.pt", crops,
                  seed=q.seed, device=q.device)
    assert ev.result["test"]["threshold"] == 0.5
    with pytest.raises(FileNotFoundError, match="encoder.pt"):          # joint needs the encoder file
        evaluate(p.evaluate, root / "features.h5", root / "no-relation.pt", tmp_path / "encoder.pt", crops,
                 seed=p.seed, device=p.device)
    with pytest.raises(FileNotFoundError, match="no-relation.pt"):      # the default still reads relation.pt
        evaluate(_params().evaluate, root / "features.h5", root / "no-relation.pt", root / "encoder.pt", crops,
                 seed=0, device="cpu")
    old = {k: v for k, v in torch.load(root / "encoder.pt", weights_only=True).items()
           if not k.startswith("head")}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old\.pt.*no jointly trained relation head.*re-run train_encoder"):
        load_joint_head(tmp_path / "old.pt")


def test_head_param_is_validated():
    from pipeline.params import ParamsError
    assert _params().evaluate.head == "relation"
    with pytest.raises(ParamsError, match="head"):
        _params(head="encoder")
