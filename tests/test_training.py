"""The shared training loop: validation-only selection, exact CPU repeatability, resume after a kill."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from graph_models import build_relation
from pipeline.params import MaskParams, OptimParams, RelationParams
from pipeline.runtime import seed_everything
from pipeline.learning.training import fit
from pipeline.scoring.inference import window_predictions
from pipeline.scoring.metrics import video_metrics

T, N, C = 3, 4, 6


def _data(seed=0, n=24):
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    x = torch.randn(n, T, N, C, generator=g) + y[:, None, None, None] * 0.8
    return x, y


def _run(tmp_path, name, epochs=4, crash_at=None, seed=3):
    seed_everything(seed)
    model = build_relation(C, N, RelationParams(hidden=8, mlp_hidden=8, dropout=0.2),
                           MaskParams(strategy="random", rate=0.3))
    x, y = _data()
    xv, yv = _data(seed=1, n=10)
    keys = pd.DataFrame({"dataset": "d", "method": ["real" if v == 0 else "fake" for v in yv.tolist()],
                         "video_id": [f"v{i}" for i in range(len(yv))], "window": 0, "label": yv.int().tolist()})
    optim = OptimParams(epochs=epochs, batch_size=5, lr=1e-2, lr_step=2, lr_gamma=0.5)
    seen = {"epochs": 0}

    def batches(gen):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(order), optim.batch_size):
            idx = order[i:i + optim.batch_size]
            yield {"x": x[idx], "label": y[idx]}

    def step(model, batch, gen):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["x"]), batch["label"])
        return {"total": loss}

    def validate(model):
        seen["epochs"] += 1
        if crash_at is not None and seen["epochs"] == crash_at:
            raise KeyboardInterrupt("simulated kill")
        w = window_predictions(keys, [model(xv)])
        return {"val_loss": 0.0, **video_metrics(w)}

    res = fit(model, train_batches=batches, step=step, validate=validate, optim=optim, seed=seed,
              device=torch.device("cpu"), checkpoint=tmp_path / f"{name}.pt", digest="d1")
    return res, model


def test_same_seed_repeats_exactly_on_cpu(tmp_path):
    a, ma = _run(tmp_path, "a")
    b, mb = _run(tmp_path, "b")
    for k in ma.state_dict():
        assert torch.equal(ma.state_dict()[k], mb.state_dict()[k]), k
    assert [h["val_auc"] for h in a.history] == [h["val_auc"] for h in b.history]


def test_best_epoch_is_chosen_on_validation_auc(tmp_path):
    res, _ = _run(tmp_path, "c", epochs=5)
    aucs = [h["val_auc"] for h in res.history]
    assert res.best_epoch == 1 + max(range(len(aucs)), key=lambda i: (aucs[i], -i))
    assert res.best_metrics["val_auc"] == max(aucs)


def test_resume_after_kill_gives_the_uninterrupted_result(tmp_path):
    ref, mref = _run(tmp_path, "ref")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "killed", crash_at=3)  # dies during epoch 3; epochs 1-2 are checkpointed
    ck = torch.load(tmp_path / "killed.pt", weights_only=True)  # plain tensors and values
    assert ck["epoch"] == 1
    res, m = _run(tmp_path, "killed")
    assert res.resumed_from == 2
    for k in mref.state_dict():
        assert torch.equal(mref.state_dict()[k], m.state_dict()[k]), k
    assert [h["val_auc"] for h in res.history] == [h["val_auc"] for h in ref.history]


def test_checkpoint_of_other_params_is_not_resumed(tmp_path, capsys):
    _run(tmp_path, "x", epochs=2)
    ck = torch.load(tmp_path / "x.pt", weights_only=True)
    ck["digest"] = "other"
    torch.save(ck, tmp_path / "x.pt")
    res, _ = _run(tmp_path, "x", epochs=2)
    assert res.resumed_from == 0
    assert "ignoring checkpoint" in capsys.readouterr().out


class _Payload:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_checkpoint_does_not_execute(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(marker), "epoch": 0, "digest": "d1"}, tmp_path / "p.pt")
    res, _ = _run(tmp_path, "p", epochs=2)
    assert not marker.exists(), "loading the checkpoint ran code from the file"
    assert res.resumed_from == 0 and (tmp_path / "p.pt.bad-1").exists()
    out = capsys.readouterr().out
    assert f"could not load checkpoint {tmp_path / 'p.pt'}" in out and "starting from scratch" in out


def test_a_truncated_checkpoint_is_moved_aside_and_training_starts_fresh(tmp_path, capsys):
    ref, mref = _run(tmp_path, "ref", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "t", epochs=3, crash_at=2)
    blob = (tmp_path / "t.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(blob[: len(blob) // 2])
    res, m = _run(tmp_path, "t", epochs=3)
    assert res.resumed_from == 0 and (tmp_path / "t.pt.bad-1").read_bytes() == blob[: len(blob) // 2]
    assert "could not load checkpoint" in capsys.readouterr().out
    for k in mref.state_dict():   # a fresh run from the same seed is the uninterrupted run
        assert torch.equal(mref.state_dict()[k], m.state_dict()[k]), k


def test_a_finished_checkpoint_is_not_resumed_but_trained_again(tmp_path, capsys):
    first, m1 = _run(tmp_path, "f", epochs=2)
    again, m2 = _run(tmp_path, "f", epochs=2)
    assert again.resumed_from == 0 and len(again.history) == 2
    assert "training again from scratch" in capsys.readouterr().out
    for k in m1.state_dict():
        assert torch.equal(m1.state_dict()[k], m2.state_dict()[k]), k
