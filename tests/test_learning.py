"""Learning works: the whole model at demo size fits a small generated task through the encoder stage's
own training code (``pipeline.learning.encoder.train_encoder``), with the stage's loss wiring.

The task: every clip is a smooth random texture drifting across 32 x 32 frames; in a fake clip a
central square flickers (+-40 grey levels, alternating frames), a temporal cue of the kind the demo's
flicker_swap family carries. Real and fake clearly differ, so a model that learns must separate the
TRAINING clips (AUC >= 0.95); a change that stops learning (inverted labels, a loss that swamps the
cross-entropy, dead gradients) fails here. About a minute on 2 CPU cores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from helpers import write_crop_dir
from pipeline.ingest.clips import window_loader
from pipeline.learning.encoder import predict_windows, train_encoder
from pipeline.params import parse_params

F, S = 8, 32
ROOT = Path(__file__).resolve().parents[1]


def _clip(rng: np.random.Generator, fake: bool) -> np.ndarray:
    base = rng.integers(40, 216, (S // 4, S // 4, 3)).astype(np.float32)
    big = np.kron(base, np.ones((4, 4, 1)))                          # blocky texture [S, S, 3]
    dx = int(rng.integers(0, 4))
    frames = []
    for t in range(F):
        f = np.roll(big, shift=(t * dx) // 2, axis=1).copy()
        if fake:
            f[10:22, 10:22] += 40.0 if t % 2 else -40.0
        frames.append(f)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)[None]  # [1, F, S, S, 3]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    rng = np.random.default_rng(0)
    vids = [(split, "flicker" if i % 2 else "real", i % 2, _clip(rng, bool(i % 2)))
            for split, n in (("train", 24), ("val", 8)) for i in range(n)]
    return write_crop_dir(tmp_path_factory.mktemp("crops"), vids)


def _train(p, crops, run_dir):
    return train_encoder(p.encoder, p.clip, p.train_encoder, crops, run_dir, seed=p.seed, device=p.device,
                         image_size=p.crop.image_size)


def _params(**te):
    """The project's params.yaml (loss, head, masking as the demo runs them) at the size of this task;
    lambda_tc differs from lambda_od so that swapping them shows."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(seed=0, device="cpu", clip={"frames": F, "snippet_length": 4})
    raw["crop"]["image_size"] = S
    raw["encoder"].update(backbone="small3d", width=8, heads=4, pretrained=None)
    raw["train_encoder"].update({"epochs": 12, "batch_size": 8, "lr": 3e-3, "lr_step": 10, "lambda_tc": 0.5, **te})
    raw["train_encoder"]["relation"].update(hidden=16, mlp_hidden=16)
    return parse_params(raw)


@pytest.fixture(scope="module")
def trained(task, tmp_path_factory):
    torch.set_num_threads(2)
    p = _params()
    return p, _train(p, task, tmp_path_factory.mktemp("run"))


def test_whole_model_fits_a_clearly_separable_task(trained, task):
    p, res = trained
    w = predict_windows(res.model, window_loader(str(task), "train", 8, 0), torch.device("cpu"))
    auc = roc_auc_score(w["label"], w["prob"])
    assert auc >= 0.95, f"train AUC {auc:.3f}: the model did not learn a task where real and fake clearly differ"
    hist = pd.DataFrame(res.fit.history)
    assert hist["train_ce"].iloc[-1] < hist["train_ce"].iloc[0] - 0.1


def test_the_stage_loss_is_ce_plus_lambda_od_od_plus_lambda_tc_tc(trained):
    """Eq. 12 with the stage's own wiring: swapping lambda_od and lambda_tc breaks this identity."""
    p, res = trained
    te = p.train_encoder
    assert te.lambda_od != te.lambda_tc
    for row in res.fit.history:
        want = row["train_ce"] + te.lambda_od * row["train_od"] + te.lambda_tc * row["train_tc"]
        swapped = row["train_ce"] + te.lambda_tc * row["train_od"] + te.lambda_od * row["train_tc"]
        assert row["train_total"] == pytest.approx(want, rel=1e-5)
        assert abs(row["train_total"] - swapped) > 1e-4


def test_labels_are_not_inverted(trained, task):
    """label 1 = fake: the fake probability of the fake training clips is the higher one."""
    _, res = trained
    w = predict_windows(res.model, window_loader(str(task), "train", 8, 0), torch.device("cpu"))
    assert w.loc[w.label == 1, "prob"].mean() > w.loc[w.label == 0, "prob"].mean() + 0.2
    assert set(w.loc[w.method == "flicker", "label"]) == {1}


def test_persistent_workers_train_the_same_weights_whatever_their_number(task, tmp_path):
    """train_encoder.num_workers >= 1 keeps ONE training loader (persistent workers, EpochShuffle reshuffled
    from each epoch generator, every draw of the order taken when the epoch starts) for all epochs: 1 and 2
    workers (different prefetching) must train bit-identical weights on CPU, and so must a second run."""
    torch.set_num_threads(2)
    runs = {}
    for name, w in (("w1", 1), ("w2", 2), ("w2again", 2)):
        runs[name] = _train(_params(epochs=2, num_workers=w), task, tmp_path / name)
    ref = runs["w1"].model.state_dict()
    for name in ("w2", "w2again"):
        other = runs[name].model.state_dict()
        assert ref.keys() == other.keys()
        for k in ref:
            assert torch.equal(ref[k], other[k]), (name, k)
        assert [h["train_total"] for h in runs[name].fit.history] == \
            [h["train_total"] for h in runs["w1"].fit.history]


class _Pid(torch.utils.data.Dataset):
    """Returns the id of the process that loads each item."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import os

        return os.getpid()


def test_one_persistent_loader_keeps_its_workers_and_reshuffles_every_epoch():
    from pipeline.ingest.clips import EpochShuffle
    from pipeline.runtime import epoch_generator

    order = EpochShuffle(8)
    loader = window_loader("unused", "train", 2, 2, dataset=_Pid(), sampler=order, persistent=True)
    pids, orders = [], []
    for epoch in range(2):
        order.set_generator(epoch_generator(0, epoch))
        pids.append({int(p) for b in loader for p in b})
        order.set_generator(epoch_generator(0, epoch))
        orders.append(list(order))
    assert pids[0] == pids[1] and len(pids[0]) == 2   # the same two worker processes in both epochs
    assert sorted(orders[0]) == list(range(8)) and orders[0] != orders[1]
    g = epoch_generator(0, 1)
    torch.empty((), dtype=torch.int64).random_(generator=g)  # what a fresh DataLoader(generator=g) takes first
    assert orders[1] == torch.randperm(8, generator=g).tolist()


def _index(rows: list[tuple[str, int]]) -> pd.DataFrame:
    return pd.DataFrame({"identity": [r[0] for r in rows], "label": [r[1] for r in rows]})


def test_paired_shuffle_puts_each_fake_after_a_real_of_the_same_person():
    """Person a: 3 reals, 2 fakes; b: 1 real, 1 fake; c: 2 fakes. Units: 2 + 1 pairs, 4 single windows
    (a's third real, c's two fakes); every unit keeps its windows adjacent, the order is a permutation,
    it repeats with the same generator and changes with another."""
    from pipeline.ingest.clips import PairedShuffle
    from pipeline.runtime import epoch_generator

    ix = _index([("a", 0), ("a", 1), ("b", 1), ("a", 0), ("c", 1), ("a", 1), ("b", 0), ("a", 0), ("c", 1)])
    order = PairedShuffle(ix)
    with pytest.raises(RuntimeError, match="set_generator"):
        list(order)
    orders = []
    for epoch in (0, 0, 1):
        order.set_generator(epoch_generator(0, epoch))
        orders.append(list(order))
    assert orders[0] == orders[1] and orders[0] != orders[2]
    for o in orders:
        assert sorted(o) == list(range(len(ix)))
        pairs, i = [], 0
        while i < len(o):  # read the order as units: a real followed by a fake of its person is a pair
            a = ix.iloc[o[i]]
            if i + 1 < len(o) and a.label == 0 and ix.iloc[o[i + 1]].label == 1 \
                    and ix.iloc[o[i + 1]].identity == a.identity:
                pairs.append(a.identity)
                i += 2
            else:
                i += 1
        assert sorted(pairs) == ["a", "a", "b"]
    with pytest.raises(ValueError, match="identity"):
        PairedShuffle(ix.drop(columns="identity"))


def test_paired_sampling_feeds_whole_pairs_to_the_encoder(tmp_path, monkeypatch):
    """train_encoder.sampling=paired: every training batch of the encoder stage holds real/fake pairs of
    one person, in both loader paths (no workers: a loader per epoch; workers: one persistent loader)."""
    import pipeline.learning.encoder as enc

    rng = np.random.default_rng(1)
    vids = [(split, "flicker" if i % 2 else "real", i % 2, _clip(rng, bool(i % 2)))
            for split, n in (("train", 12), ("val", 4)) for i in range(n)]
    crops = write_crop_dir(tmp_path / "crops", vids)
    ix = pd.read_csv(crops / "index.csv")
    ix["identity"] = [f"p{i // 2}" for i in range(len(ix))]   # video 2k (real) and 2k+1 (fake): one person
    ix.to_csv(crops / "index.csv", index=False)

    seen = []
    real_loss = enc.mrl_loss

    def spy(logits, y, *a, **k):  # the real loss, recording each batch's labels
        seen.append(y.tolist())
        return real_loss(logits, y, *a, **k)

    monkeypatch.setattr(enc, "mrl_loss", spy)
    torch.set_num_threads(2)
    for workers in (0, 1):
        seen.clear()
        p = _params(epochs=2, num_workers=workers, sampling="paired", batch_size=4)
        _train(p, crops, tmp_path / f"w{workers}")
        assert [len(b) for b in seen] == [4, 4, 4] * 2
        assert all(b == [0.0, 1.0, 0.0, 1.0] for b in seen)
        seen.clear()
        _train(_params(epochs=2, num_workers=workers, batch_size=4), crops, tmp_path / f"s{workers}")
        assert any(b != [0.0, 1.0, 0.0, 1.0] for b in seen)   # shuffled: not in pairs
