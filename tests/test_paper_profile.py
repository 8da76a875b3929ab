"""The paper's settings are the README's one documented `dvc exp run -S ...` line away.

The test reads that line out of the README, applies it to params.yaml the way `-S` does, checks the
result is the paper's configuration, and builds the model and takes one optimisation step with it.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.params import parse_params

ROOT = Path(__file__).resolve().parents[1]


def _readme_overrides() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Paper settings", 1)[1].split("\n#", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    argv = shlex.split(block)
    assert argv[:3] == ["dvc", "exp", "run"]
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-S")


def _params_yaml_header_command() -> list[str]:
    """The `dvc exp run` line in params.yaml's header comment (continued with backslashes)."""
    lines, on = [], False
    for line in (ROOT / "params.yaml").read_text().splitlines():
        body = line.lstrip("#").strip()
        on = on or body.startswith("dvc exp run")
        if on:
            lines.append(body.rstrip("\\"))
            if not body.endswith("\\"):
                break
    return shlex.split(" ".join(lines))


def test_params_yaml_header_gives_the_readmes_paper_command():
    """Both places that print the paper-settings command print the same one (lr halved every 5 epochs)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Paper settings", 1)[1].split("\n#", 1)[0]
    readme = shlex.split(re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " "))
    assert _params_yaml_header_command() == readme
    assert _readme_overrides()["train_encoder.lr_step"] == _readme_overrides()["train_relation.lr_step"] == "5"


def _apply(raw: dict, overrides: dict[str, str]) -> dict:
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        assert leaf in node, f"-S {key}: DVC only overrides existing keys"
        node[leaf] = yaml.safe_load(value)
    return raw


def paper_params():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return parse_params(_apply(raw, _readme_overrides()))


def test_readme_line_gives_the_paper_configuration():
    p = paper_params()
    assert (p.clip.frames, p.clip.snippet_length, p.clip.snippets) == (100, 20, 5)
    assert p.crop.image_size == 112
    assert (p.encoder.backbone, p.encoder.heads, p.encoder.sta) == ("mc3_18", 12, True)
    te = p.train_encoder
    assert (te.epochs, te.batch_size, te.lr, te.lr_step, te.lr_gamma) == (30, 30, 1e-4, 5, 0.5)
    assert te.lambda_od == te.lambda_tc == 0.75
    assert (p.mask.strategy, p.mask.rate) == ("minimal", 0.5)


@pytest.mark.slow
def test_paper_model_builds_and_takes_one_step():
    from graph_models import build_model, mrl_loss

    torch.manual_seed(0)
    p = paper_params()
    model = build_model(p.encoder.model_copy(update={"pretrained": None}), p.clip, p.train_encoder.relation,
                        p.train_encoder.mask)
    opt = torch.optim.Adam(model.parameters(), lr=p.train_encoder.lr)
    x = torch.rand(1, 3, p.clip.frames, p.crop.image_size, p.crop.image_size)
    logits, enc = model(x)
    assert enc.vertices.shape[:3] == (1, 5, 12)
    te = p.train_encoder
    loss = mrl_loss(logits, torch.ones(1), enc, te.lambda_od, te.lambda_tc, te.od_variant, te.tc_variant)
    before = model.relation.edges.detach().clone()
    loss["total"].backward()
    opt.step()
    assert torch.isfinite(loss["total"])
    assert not torch.equal(before, model.relation.edges.detach())
