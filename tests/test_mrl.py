"""The assembled model (graph_models/mrl.py, backbones.py): shapes, normalisation, snippet split,
weights loading, every ablation switch of Tables IV/V and Fig. 5-7, determinism, paper size."""
import time
import warnings

import pytest
import torch
from torch import nn

import graph_models.backbones as backbones
from graph_models import (Encoder, EncoderOutput, build_model, build_relation,
                          mrl_loss)
from graph_models.gconv_gru import tgt_available
from graph_models.sta import STA
from pipeline.params import parse_params

torch.set_num_threads(1)


def small_params(**over):
    raw = {"encoder": {"backbone": "small3d", "width": 4, "heads": 3, "pretrained": None},
           "clip": {"frames": 8, "snippet_length": 4},
           "train_encoder": {"relation": {"hidden": 5, "mlp_hidden": 7}}}
    for key, value in over.items():
        node = raw
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return parse_params(raw)


def run_once(params, size=32, batch=2):
    model = build_model(params.encoder, params.clip, params.train_encoder.relation, params.train_encoder.mask)
    frames = params.clip.frames
    logits, enc = model(torch.rand(batch, 3, frames, size, size))
    t = params.clip.frames // params.clip.snippet_length
    assert logits.shape == (batch,)
    assert enc.vertices.shape[:3] == (batch, t, params.encoder.heads)
    assert enc.attention.shape[:3] == (batch, t, params.encoder.heads)
    te = params.train_encoder
    loss = mrl_loss(logits, torch.tensor([0, 1][:batch]), enc, te.lambda_od, te.lambda_tc, te.od_variant,
                    te.tc_variant)
    loss["total"].backward()
    assert torch.isfinite(loss["total"])
    return model, logits, enc


def test_default_small_model_and_gradients():
    model, _, enc = run_once(small_params())
    assert isinstance(enc, EncoderOutput) and enc.vertices.shape == (2, 2, 3, 16)
    assert model.encoder.out_dim == 16 and model.encoder.feature_layer is model.encoder.backbone.layer2
    assert model.relation.edges.grad is not None and model.relation.edges.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in model.named_parameters()), "some parameter got no gradient"


ABLATIONS = {
    "sta_off (Table V graph only)": {"encoder.sta": False},
    "graph_off (Table V STA only)": {"train_encoder.relation.cell": "none"},
    "baseline (Table V, no STA no graph)": {"encoder.sta": False, "train_encoder.relation.cell": "none",
                                            "train_encoder.mask.strategy": "none"},
    "mask_none": {"train_encoder.mask.strategy": "none"},
    "mask_random_0.6 (Fig. 5)": {"train_encoder.mask.strategy": "random", "train_encoder.mask.rate": 0.6},
    "mask_minimal_1.0 (Fig. 5)": {"train_encoder.mask.rate": 1.0},
    "mask_in_inference (RQ2)": {"train_encoder.mask.in_inference": True},
    "max_pooling": {"encoder.pooling": "max"},
    "wo_L_od": {"train_encoder.lambda_od": 0.0},
    "wo_L_tc": {"train_encoder.lambda_tc": 0.0},
    "authors_losses": {"train_encoder.od_variant": "cosine", "train_encoder.tc_variant": "l1"},
    "heads_4 (Fig. 6)": {"encoder.heads": 4},
    "snippet_2 (Fig. 7, frames fixed)": {"clip.snippet_length": 2},
    "snippet_8 (Fig. 7, T=1)": {"clip.snippet_length": 8},
    "spatial_attention": {"encoder.attention": "spatial"},
    "motion vertices (not in the paper)": {"encoder.motion": True},
    "normalized_adjacency": {"train_encoder.relation.adjacency": "normalized"},
    "two_layers": {"train_encoder.relation.layers": 2},
    "image_based (RQ3)": {"encoder.backbone": "resnet18_2d", "encoder.attention": "spatial",
                          "train_encoder.relation.cell": "gcn", "clip.snippet_length": 1},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_ablation_builds_and_runs(name):
    run_once(small_params(**ABLATIONS[name]))


@pytest.mark.skipif(not tgt_available(), reason="torch_geometric_temporal is not importable")
@pytest.mark.parametrize("cell", ["gconv_gru", "tgcn"])
def test_tgt_cells_in_model(cell):
    model, _, _ = run_once(small_params(**{"train_encoder.relation.cell": cell}))
    assert model.relation.edges.grad.abs().sum() > 0


def test_masking_only_in_training_unless_in_inference():
    p = small_params(**{"train_encoder.mask.rate": 0.5})
    rel = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).relation
    e = rel.edges.detach()
    q = e.min() + (e.max() - e.min()) * 0.5
    assert torch.equal(rel.train().masked_edges(), e * (e >= q))
    assert torch.equal(rel.eval().masked_edges(), e)
    p2 = small_params(**{"train_encoder.mask.in_inference": True})
    rel2 = build_model(p2.encoder, p2.clip, p2.train_encoder.relation, p2.train_encoder.mask).relation.eval()
    assert (rel2.masked_edges() == 0).sum() > 0


def test_random_mask_redrawn_each_call():
    p = small_params(**{"train_encoder.mask.strategy": "random", "train_encoder.mask.rate": 0.5,
                        "train_encoder.relation.dropout": 0.0})
    rel = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask).relation.train()
    v = torch.randn(2, 2, 3, 16)
    assert not torch.equal(rel(v), rel(v))
    rel.eval()
    assert torch.equal(rel(v), rel(v))


def test_build_model_reads_train_encoder_sections():
    p = small_params(**{"train_encoder.mask.strategy": "random", "train_encoder.mask.rate": 0.3,
                        "train_encoder.relation.hidden": 6})
    m = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask)
    assert (m.relation.masking.strategy, m.relation.masking.rate) == ("random", 0.3)
    assert m.relation.cell.out_channels == 6 and m.relation.heads == 3
    rel = build_relation(16, 3, p.relation, p.mask)                    # the relation stage's own sections
    assert rel(torch.randn(2, 4, 3, 16)).shape == (2,)


def test_determinism_same_seed_same_output():
    p = small_params(**{"train_encoder.mask.strategy": "random"})
    x = torch.rand(2, 3, 8, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        m = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask)
        logits, enc = m(x)
        outs.append((logits.detach(), enc.vertices.detach()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


class _Identity3d(nn.Module):
    """A 'backbone' that returns its (normalised) input, to test normalisation and snippet split."""
    out_channels, mean, std = 3, (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    feature_layer = None

    def forward(self, x):
        return x


def test_encoder_normalises_inside_and_splits_consecutive_frames():
    enc = Encoder(_Identity3d(), STA(3, 2, enabled=False), snippet_length=2)
    x = torch.rand(1, 3, 6, 2, 2)
    out = enc(x)
    norm = (x - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1, 1)) / torch.tensor([0.5, 0.5, 1.0]).view(1, 3, 1, 1, 1)
    for t in range(3):
        ref = torch.nn.functional.normalize(norm[0, :, 2 * t:2 * t + 2].sum((1, 2, 3)), dim=0)
        assert torch.allclose(out.vertices[0, t, 0], ref, atol=1e-6)
        assert torch.allclose(out.vertices[0, t, 1], ref, atol=1e-6)
    with pytest.raises(ValueError):
        enc(torch.rand(1, 3, 5, 2, 2))                                 # 5 frames, D = 2


def test_input_filters_by_hand():
    """highpass: x minus its 3x3 mean (edges replicated); temporal: frame minus previous frame, 0 first."""
    from graph_models.mrl import highpass, temporal_difference

    x = torch.zeros(1, 1, 2, 3, 3)
    x[0, 0, 0, 1, 1] = 9.0                  # one bright pixel in frame 0
    x[0, 0, 1] = torch.arange(3.0).view(1, 3).expand(3, 3)   # a ramp across the columns in frame 1
    hp = highpass(x)
    assert hp[0, 0, 0, 1, 1] == pytest.approx(9.0 - 1.0)   # centre: 9 - 9/9
    assert hp[0, 0, 0, 0, 0] == pytest.approx(0.0 - 1.0)   # corner: its 3x3 (replicated) holds the 9 once
    assert torch.allclose(hp[0, 0, 1, :, 1], torch.zeros(3))  # a linear ramp has no residual inside
    assert hp[0, 0, 1, 0, 0] == pytest.approx(0.0 - 1.0 / 3)  # left edge: replicated 0, 0, 1 per row
    td = temporal_difference(x)
    assert torch.equal(td[:, :, 0], torch.zeros(1, 1, 3, 3)) and torch.equal(td[:, :, 1], x[:, :, 1] - x[:, :, 0])


def test_encoder_input_filter_is_applied_after_normalising_and_across_snippets():
    x = torch.rand(1, 3, 4, 4, 4)
    norm = (x - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1, 1)) / torch.tensor([0.5, 0.5, 1.0]).view(1, 3, 1, 1, 1)
    seen = []

    class Spy(_Identity3d):
        def forward(self, x):
            seen.append(x)
            return x

    Encoder(Spy(), STA(3, 2, enabled=False), snippet_length=2, input_filter="temporal")(x)
    # snippet 2's first frame is frame 2 minus frame 1 (the difference crosses the snippet border)
    assert torch.allclose(seen[0][1, :, 0], norm[0, :, 2] - norm[0, :, 1], atol=1e-6)
    assert torch.equal(seen[0][0, :, 0], torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="input_filter"):
        Encoder(Spy(), STA(3, 2, enabled=False), snippet_length=2, input_filter="sobel")


def test_backbone_shapes():
    assert backbones.Small3DBackbone(4)(torch.rand(1, 3, 8, 64, 64)).shape == (1, 16, 4, 8, 8)
    mc3 = backbones.MC3Backbone(pretrained=None)
    assert mc3(torch.rand(1, 3, 4, 32, 32)).shape == (1, 512, 4, 2, 2)
    assert not any(isinstance(m, (nn.Linear, nn.AdaptiveAvgPool3d)) for m in mc3.modules())
    r2d = backbones.ResNet2DBackbone(pretrained=None)
    assert r2d(torch.rand(1, 3, 3, 64, 64)).shape == (1, 512, 3, 2, 2)


def test_pretrained_auto_loads_from_hub_cache_or_warns_once(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(backbones, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backbones.MC3Backbone("auto")
        backbones.MC3Backbone("auto")
    msgs = [str(w.message) for w in caught if "RANDOM WEIGHTS" in str(w.message)]
    assert len(msgs) == 1 and "mc3_18" in msgs[0]

    from torchvision.models.video import mc3_18
    torch.manual_seed(7)
    ref = mc3_18(weights=None)
    (tmp_path / "checkpoints").mkdir()
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / "mc3_18-a90a0ba3.pth")
    loaded = backbones.MC3Backbone("auto")
    assert torch.equal(loaded.layer4[1].conv2[0].weight, ref.layer4[1].conv2[0].weight)
    by_path = backbones.MC3Backbone(str(tmp_path / "checkpoints" / "mc3_18-a90a0ba3.pth"))
    assert torch.equal(by_path.stem[0].weight, ref.stem[0].weight)
    with pytest.raises(FileNotFoundError):
        backbones.MC3Backbone(str(tmp_path / "missing.pth"))


@pytest.mark.slow
def test_paper_size_forward_backward():
    """mc3_18, 112 px, T = 5 snippets of D = 20 frames, N = 12, batch 1 (slow on CPU)."""
    p = parse_params({"encoder": {"backbone": "mc3_18", "pretrained": None, "heads": 12},
                      "clip": {"frames": 100, "snippet_length": 20}})
    torch.manual_seed(0)
    model = build_model(p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask)
    t0 = time.time()
    logits, enc = model(torch.rand(1, 3, 100, 112, 112))
    assert enc.vertices.shape == (1, 5, 12, 512) and enc.attention.shape == (1, 5, 12, 7, 7)
    mrl_loss(logits, torch.tensor([1]), enc)["total"].backward()
    assert model.relation.edges.grad is not None
    print(f"paper-size forward+backward: {time.time() - t0:.1f} s")


def _relation(**over):
    from pipeline.params import MaskParams, RelationParams
    rel = {"cell": "dense_gru", "hidden": 4, "mlp_hidden": 4, "dropout": 0.0}
    mask = {"strategy": "minimal", "rate": 0.5}
    for k, v in over.items():
        (mask if k in MaskParams.model_fields else rel)[k] = v
    return build_relation(3, 5, RelationParams(**rel), MaskParams(**mask))


def test_edge_init_options():
    torch.manual_seed(0)
    assert (_relation(edge_init="ones").edges == 1).all()
    b = _relation(edge_init="binary").edges
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    g = _relation(edge_init="gaussian").edges
    assert len(g.unique()) == 25


def test_ones_init_minimal_masking_keeps_every_edge_until_E_has_an_order():
    rel = _relation(edge_init="ones").train()
    assert torch.equal(rel.masked_edges(), torch.ones(5, 5))


def test_masked_edges_and_the_evaluation_graph():
    torch.manual_seed(1)
    rel = _relation()                                  # minimal 0.5, gaussian
    e = rel.edges.detach()
    kept = (e >= e.min() + (e.max() - e.min()) * 0.5).float()
    rel.train()
    assert torch.equal(rel.masked_edges().detach(), e * kept)
    rel.eval()
    assert torch.equal(rel.masked_edges().detach(), e)  # paper: unmasked at evaluation
    rel.masking.in_inference = "expected"
    assert torch.equal(rel.masked_edges().detach(), e * kept)  # minimal: the training graph
    rnd = _relation(strategy="random", rate=0.25, in_inference="expected").eval()
    assert torch.allclose(rnd.masked_edges().detach(), rnd.edges.detach() * 0.75)


def test_epoch_schedule_draws_one_mask_per_epoch():
    torch.manual_seed(2)
    step = _relation(strategy="random", rate=0.5).train()
    assert not torch.equal(step.edge_indicator(), step.edge_indicator())
    ep = _relation(strategy="random", rate=0.5, schedule="epoch").train()
    first = ep.edge_indicator()
    assert torch.equal(first, ep.edge_indicator())
    ep.masking.new_epoch()
    assert not torch.equal(first, ep.edge_indicator())


def test_minimal_masked_entries_get_no_gradient_and_kept_ones_do():
    torch.manual_seed(3)
    rel = _relation().train()
    eta = rel.edge_indicator()
    rel(torch.randn(4, 2, 5, 3)).sum().backward()
    assert (rel.edges.grad[eta == 0] == 0).all() and (rel.edges.grad[eta == 1] != 0).any()


def test_pretrained_kinetics400_loads_through_torchvisions_weights_api(tmp_path, monkeypatch):
    """The download branch without a network: torchvision's hub directory holds the file, so its
    weights API (hash check included) loads it instead of downloading."""
    import hashlib
    import urllib.error

    from torchvision.models.video import MC3_18_Weights, mc3_18
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(11)
    ref = mc3_18(weights=None)
    (tmp_path / "checkpoints").mkdir()
    target = backbones.hub_file(MC3_18_Weights.KINETICS400_V1.url)
    torch.save(ref.state_dict(), target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    # torchvision checks the file against the hash prefix in its name: name a copy after our file's hash
    url = MC3_18_Weights.KINETICS400_V1.url.replace("a90a0ba3", digest[:8])
    monkeypatch.setattr(MC3_18_Weights.KINETICS400_V1.value, "url", url)
    target.rename(backbones.hub_file(url))
    loaded = backbones.MC3Backbone("kinetics400")
    assert loaded.weights_path == backbones.hub_file(url)
    assert torch.equal(loaded.layer4[1].conv2[0].weight, ref.layer4[1].conv2[0].weight)

    backbones.hub_file(url).unlink()                   # offline and no file: a clear error, no traceback soup

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match=r"kinetics400.*put it at .*checkpoints"):
        backbones.MC3Backbone("kinetics400")
    with pytest.raises(ValueError, match="small3d"):
        backbones.build_backbone("small3d", "kinetics400")


def test_batch_input_norm_standardises_each_vertex_entry_over_batch_and_snippets():
    torch.manual_seed(4)
    rel = _relation(input_norm="batch").train()
    v = torch.nn.functional.normalize(torch.rand(16, 3, 5, 3) + 2.0, dim=-1)   # collinear-ish unit vertices
    z = rel.normalize_input(v).reshape(48, 15)
    assert torch.allclose(z.mean(0), torch.zeros(15), atol=1e-5)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(15), atol=1e-2)
    assert _relation(input_norm="none").normalize_input(v) is v                              # 'none': the paper's vertices
    with pytest.raises(ValueError, match="input_norm"):
        from graph_models.masking import EdgeMasking
        from graph_models.mrl import RelationLearner
        from graph_models.gconv_gru import build_cell
        RelationLearner(3, 5, build_cell("dense_gru", 3, 4), EdgeMasking("minimal", 0.5, "step", False),
                        adjacency_mode="raw", mlp_hidden=4, dropout=0.0, edge_init="gaussian", input_norm="layer")


def test_a_relation_file_restores_the_masking_it_was_trained_with(tmp_path):
    """models/relation.pt as the stage writes it (and as files of the previous code are: the same keys) loads
    with the learner's one masking object rebuilt from the file's ``mask``, whatever params.yaml says now."""
    from pipeline.model_io import load_relation
    from pipeline.params import MaskParams, RelationParams
    from pipeline.runtime import atomic_torch_save
    torch.manual_seed(5)
    relation = RelationParams(hidden=4, mlp_hidden=4)
    mask = MaskParams(strategy="random", rate=0.3, in_inference="expected", schedule="epoch")
    rel = build_relation(3, 5, relation, mask)
    payload = {"format": "mrl-relation/1", "state_dict": rel.state_dict(), "in_dim": 3, "heads": 5, "snippets": 2,
               "relation": relation.model_dump(), "mask": mask.model_dump(), "threshold": 0.5,
               "encoder_sha256": "", "best_epoch": 1}
    atomic_torch_save(payload, tmp_path / "relation.pt")
    loaded, meta = load_relation(tmp_path / "relation.pt")
    assert loaded.masking.config() == mask.model_dump() == rel.masking.config()
    assert not loaded.training and torch.equal(loaded.masked_edges(), loaded.edges * 0.7)  # 'expected', random
    assert torch.equal(loaded.edges, rel.edges)
    payload["mask"] = {"strategy": "random", "rate": 0.3}                   # no file of this project lacks them
    atomic_torch_save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lack"):
        load_relation(tmp_path / "bad.pt")


def test_a_learner_pickled_before_the_masking_object_unpickles_with_it():
    """An MLflow model of an older run is a pickle of the learner with four loose mask attributes."""
    from graph_models.mrl import RelationLearner
    rel = _relation(strategy="random", rate=0.25, in_inference="expected").eval()
    state = dict(rel.__dict__)
    state["_modules"] = {k: v for k, v in state["_modules"].items() if k != "masking"}
    state.update(mask_strategy="random", mask_rate=0.25, mask_schedule="step", mask_in_inference="expected",
                 _epoch_mask=None)
    old = RelationLearner.__new__(RelationLearner)
    old.__setstate__(state)
    assert old.masking.config() == rel.masking.config() and not old.masking.training
    assert torch.equal(old.masked_edges(), rel.edges * 0.75)


def test_library_defaults_are_the_params_defaults():
    """Defaults live in pipeline/params.py: a library argument that has a default at all has that one."""
    import inspect

    from graph_models import STA, Encoder, EdgeMasking, RelationLearner, build_backbone, build_cell, mrl_loss
    from pipeline.params import EncoderParams, MaskParams, RelationParams, TrainEncoderParams
    table = [
        (EdgeMasking.__init__, MaskParams, {"strategy": "strategy", "rate": "rate", "schedule": "schedule",
                                            "in_inference": "in_inference"}),
        (RelationLearner.__init__, RelationParams, {"adjacency_mode": "adjacency", "mlp_hidden": "mlp_hidden",
                                                    "dropout": "dropout", "edge_init": "edge_init",
                                                    "input_norm": "input_norm"}),
        (build_cell, RelationParams, {"layers": "layers", "cheb_k": "cheb_k"}),
        (Encoder.__init__, EncoderParams, {"input_filter": "input_filter"}),
        (STA.__init__, EncoderParams, {"attention": "attention", "pooling": "pooling", "enabled": "sta",
                                       "motion": "motion"}),
        (build_backbone, EncoderParams, {"pretrained": "pretrained", "width": "width"}),
        (mrl_loss, TrainEncoderParams, {"lambda_od": "lambda_od", "lambda_tc": "lambda_tc", "od_variant": "od_variant",
                                        "tc_variant": "tc_variant", "od_reduction": "od_reduction"}),
    ]
    for fn, section, names in table:
        sig = inspect.signature(fn).parameters
        for arg, field in names.items():
            default = sig[arg].default
            if default is not inspect.Parameter.empty:
                assert default == section.model_fields[field].default, f"{fn.__qualname__}({arg}={default!r})"
    required = inspect.signature(RelationLearner.__init__).parameters
    assert all(required[a].default is inspect.Parameter.empty for a in ("masking", "mlp_hidden", "input_norm"))


def test_motion_vertices_double_C_and_keep_the_paper_half():
    """encoder.motion: vertices [B, T, N, 2C]; the first C channels are Eq. 3's (the same weights without motion
    give them), the relation head is built for 2C, and with a per-frame backbone a clip that does not change in
    time has a zero motion half (a 3D backbone's zero padding in time makes a still clip's features change)."""
    torch.manual_seed(0)
    model, _, enc = run_once(small_params(**{"encoder.motion": True}))
    assert model.encoder.out_dim == 32 and enc.vertices.shape == (2, 2, 3, 32)
    assert model.relation.in_dim == 32
    torch.manual_seed(0)
    plain = build_model(*(lambda p: (p.encoder, p.clip, p.train_encoder.relation, p.train_encoder.mask))(small_params()))
    plain.encoder.load_state_dict(model.encoder.state_dict())
    model.eval(), plain.eval()
    x = torch.rand(2, 3, 8, 32, 32)
    with torch.no_grad():
        both, alone = model.encoder(x).vertices, plain.encoder(x).vertices
    assert torch.allclose(both[..., :16], alone, atol=1e-6)
    assert torch.all(both[..., 16:] >= 0) and torch.all(both[..., 16:].sum(-1) > 0)
    per_frame = small_params(**{"encoder.motion": True, "encoder.backbone": "mobilenet_v2", "encoder.freeze_blocks": 0})
    encoder = build_model(per_frame.encoder, per_frame.clip, per_frame.train_encoder.relation,
                          per_frame.train_encoder.mask).encoder.eval()
    with torch.no_grad():
        moving = encoder(x).vertices
        still = encoder(x[:, :, :1].expand(-1, -1, 8, -1, -1)).vertices
    assert encoder.out_dim == 192 and torch.all(moving[..., 96:].sum(-1) > 0)
    assert torch.all(still[..., 96:] == 0)
