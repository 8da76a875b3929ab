"""params.yaml validation: unknown keys name the closest valid key, bad values name the range."""
from pathlib import Path

import pytest
import yaml

from pipeline.params import ParamsError, flatten, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.clip.frames % p.clip.snippet_length == 0
    assert p.clip.snippets == p.clip.frames // p.clip.snippet_length
    assert p.data.datasets[0].type == "plain"


def test_misspelt_key_names_closest_valid_key():
    with pytest.raises(ParamsError) as e:
        parse_params({"mask": {"rte": 0.3}})
    msg = str(e.value)
    assert "unknown key 'mask.rte'" in msg and "did you mean 'mask.rate'" in msg


def test_misspelt_top_level_key():
    with pytest.raises(ParamsError, match=r"unknown key 'encodr'; did you mean 'encoder'"):
        parse_params({"encodr": {}})


def test_misspelt_key_inside_dataset_list():
    with pytest.raises(ParamsError, match=r"did you mean 'data.datasets.0.root'"):
        parse_params({"data": {"datasets": [{"name": "x", "type": "plain", "rooot": "a"}]}})


def test_out_of_range_value_names_allowed_range():
    with pytest.raises(ParamsError) as e:
        parse_params({"mask": {"rate": 1.5}})
    assert "'mask.rate'" in str(e.value) and "less than or equal to 1" in str(e.value) and "1.5" in str(e.value)


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(ParamsError, match=r"'mask.strategy'.*'minimal', 'random' or 'none'"):
        parse_params({"mask": {"strategy": "smallest"}})


def test_frames_must_be_multiple_of_snippet_length():
    with pytest.raises(ParamsError, match=r"clip.frames \(100\) must be a multiple of clip.snippet_length \(30\)"):
        parse_params({"clip": {"frames": 100, "snippet_length": 30}})


def test_duplicate_dataset_names_rejected():
    ds = {"name": "a", "type": "plain", "root": "x"}
    with pytest.raises(ParamsError, match="repeated: \\['a'\\]"):
        parse_params({"data": {"datasets": [ds, ds]}})


def test_load_params_reports_file_name(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("seed: [1, 2]\n")
    with pytest.raises(ParamsError, match=str(f)):
        load_params(f)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def _leaves(raw: dict, prefix: str = ""):
    for k, v in raw.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_the_one_default_set_is_params_yaml_key_by_key():
    """Regression: a missing section silently took code defaults unlike params.yaml (clip 100/20, MC3-18,
    hidden 128). Every key params.yaml writes has exactly its value as the code default."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = flatten(parse_params({}))
    for key, value in _leaves(raw):
        if key == "data.datasets":
            assert parse_params({"data": {"datasets": value}}).data.datasets == parse_params({}).data.datasets
            continue
        assert key in defaults and defaults[key] == value, f"{key}: params.yaml {value!r}, default {defaults.get(key)!r}"
    assert parse_params(raw) == parse_params({})


@pytest.mark.parametrize("section", ["clip", "relation", "mask", "encoder", "crop", "train_relation"])
def test_a_missing_or_empty_section_means_params_yaml(section):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    full = parse_params(raw)
    missing = {k: v for k, v in raw.items() if k != section}
    assert parse_params(missing) == full
    assert parse_params({**raw, section: None}) == full      # `clip:` with nothing under it
    assert parse_params({**raw, section: {}}) == full


@pytest.mark.parametrize("crop, message", [
    ({"thresholds": [0.6, 0.7]}, r"'crop.thresholds': List should have at least 3 items"),
    ({"thresholds": [0.6, 0.7, 0.7, 0.7]}, r"'crop.thresholds': List should have at most 3 items"),
    ({"thresholds": [0.6, 1.5, 0.7]}, r"'crop.thresholds.1': Input should be less than or equal to 1"),
    ({"thresholds": [0.0, 0.7, 0.7]}, r"'crop.thresholds.0': Input should be greater than 0"),
    ({"smooth": 4}, r"'crop.smooth': .*must be odd"),
    ({"max_frames": 16}, r"crop.max_frames \(16\) is less than clip.frames \(32\)"),
])
def test_bad_crop_detector_settings_are_rejected_at_load_time(crop, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"crop": crop})


def test_flatten_gives_dotted_keys():
    p = load_params(ROOT / "params.yaml")
    flat = flatten(p)
    assert flat["mask.rate"] == p.mask.rate
    assert flat["data.datasets.0.name"] == "demo"
    assert all(not isinstance(v, dict) for v in flat.values())


def test_params_yaml_keys_roundtrip():
    """Every key written in params.yaml is a real field (the file validates with no extras)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert parse_params(raw).model_dump(exclude_unset=True).keys() == raw.keys()


def test_mask_rate_true_is_rejected_with_the_key_named():
    """YAML `rate: true` must not silently become 1.0."""
    with pytest.raises(ParamsError, match="rate"):
        parse_params({"mask": {"strategy": "minimal", "rate": True}})
    with pytest.raises(ParamsError, match="rate"):
        parse_params({"train_encoder": {"mask": {"rate": False}}})
    assert parse_params({"mask": {"rate": 1}}).mask.rate == 1.0


def test_new_keys_are_in_params_yaml_so_dvc_exp_run_S_can_set_them():
    """`dvc exp run -S key=value` only overrides keys params.yaml has."""
    import yaml
    from pathlib import Path
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert {"od_reduction", "augment", "pseudo_fake_prob"} <= set(raw["train_encoder"])
    assert {"schedule", "in_inference"} <= set(raw["mask"]) and {"input_norm", "edge_init"} <= set(raw["relation"])
    assert "holdout_methods" in raw["data"]


def test_merge_overrides_replaces_nested_keys_only():
    from pipeline.params import merge_overrides
    base = {"mask": {"rate": 0.5, "strategy": "minimal"}, "seed": 0}
    got = merge_overrides(base, {"mask": {"rate": 0.6}, "clip": {"frames": 8}})
    assert got == {"mask": {"rate": 0.6, "strategy": "minimal"}, "seed": 0, "clip": {"frames": 8}}
    assert base["mask"]["rate"] == 0.5                         # the input is not changed


def test_evaluate_groups_and_the_peer_section_are_checked_at_load_time():
    assert parse_params({"evaluate": {"groups": " data/demo/people.csv "}}).evaluate.groups == "data/demo/people.csv"
    assert parse_params({"evaluate": {"groups": None}}).evaluate.groups is None
    with pytest.raises(ParamsError, match=r"'evaluate.groups': .*must be the path of a .csv file"):
        parse_params({"evaluate": {"groups": "people.txt"}})
    with pytest.raises(ParamsError, match=r"'peer.weights': .*'Meso4_DF' or 'Meso4_F2F'"):
        parse_params({"peer": {"weights": "MesoInception_DF"}})
    with pytest.raises(ParamsError, match=r"unknown key 'peer.frame'; did you mean 'peer.frames'\?"):
        parse_params({"peer": {"frame": 8}})


@pytest.mark.parametrize("raw, key", [
    ({"train_relation": {"epochs": True}}, "train_relation.epochs"),
    ({"seed": True}, "seed"),
    ({"train_encoder": {"flip_prob": True}}, "train_encoder.flip_prob"),
    ({"train_encoder": {"batch_size": False}}, "train_encoder.batch_size"),
    ({"crop": {"thresholds": [0.6, True, 0.7]}}, "crop.thresholds.1"),
    ({"evaluate": {"threshold": True}}, "evaluate.threshold"),
    ({"crop": {"max_frames": True}}, "crop.max_frames"),
])
def test_no_numeric_param_takes_a_boolean(raw, key):
    """Regression: `epochs: true`, `seed: true`, `flip_prob: true` were accepted as 1, 1 and 1.0 (a run with
    `epochs: true` trained one epoch); only mask.rate refused a boolean."""
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    assert f"'{key}': " in str(e.value) and "not a boolean" in str(e.value)


def test_every_numeric_field_refuses_a_boolean():
    """Walk the params tree: each int/float field (also Optional) refuses true and false."""
    from pydantic import BaseModel
    from pipeline.params import Params

    def numeric(model, prefix=()):
        for name, f in model.model_fields.items():
            ann = f.annotation
            args = getattr(ann, "__args__", None) or (ann,)
            for a in args:
                if isinstance(a, type) and issubclass(a, BaseModel):   # a section, or a list of them
                    at = prefix + (name,) if a is ann else prefix + (name, 0)
                    yield from numeric(a, at)
                    break
            else:
                if any(a in (int, float) for a in args) and ann is not bool:
                    yield prefix + (name,)

    keys = list(numeric(Params))
    assert len(keys) > 40 and ("seed",) in keys and ("train_encoder", "lambda_od") in keys
    for key in keys:
        for b in (True, False):
            raw: dict = {}
            cur = raw
            for part, nxt in zip(key[:-1], key[1:]):
                if isinstance(nxt, int):                   # data.datasets.0.<key>: a one-item list
                    cur[part] = [{}]
                    cur = cur[part]
                else:
                    cur = cur.setdefault(part, {}) if isinstance(cur, dict) else cur[part]
            cur[key[-1]] = b
            with pytest.raises(ParamsError, match=f"'{'.'.join(map(str, key))}': .*(not a boolean|must be 'auto' or an int)"):
                parse_params(raw)


def test_a_yaml_integer_is_a_valid_float_and_a_quoted_number_is_not():
    p = parse_params(yaml.safe_load("train_encoder: {lambda_od: 1, flip_prob: 0}\nevaluate: {ci: 0.9}"))
    assert p.train_encoder.lambda_od == 1.0 and isinstance(p.train_encoder.lambda_od, float)
    assert p.train_encoder.flip_prob == 0.0
    with pytest.raises(ParamsError, match=r"'train_relation.epochs': .*not a string: write the number unquoted"):
        parse_params(yaml.safe_load("train_relation: {epochs: '5'}"))
    with pytest.raises(ParamsError, match=r"'train_relation.epochs': Input should be a valid integer"):
        parse_params({"train_relation": {"epochs": 5.5}})


@pytest.mark.parametrize("text, key", [
    ("train_encoder: {lambda_od: .inf}", "train_encoder.lambda_od"),
    ("train_encoder: {lambda_tc: .nan}", "train_encoder.lambda_tc"),
    ("train_relation: {weight_decay: .inf}", "train_relation.weight_decay"),
    ("evaluate: {threshold: .nan}", "evaluate.threshold"),
])
def test_non_finite_numbers_are_refused_at_load(text, key):
    """Regression: `lambda_od: .inf` passed validation and failed 29 s later inside the loss."""
    with pytest.raises(ParamsError, match=f"'{key}': Input should be a finite number"):
        parse_params(yaml.safe_load(text))


def test_seed_fits_numpy_torch_and_sklearn():
    """Regression: `seed: 99999999999999999999999` passed and failed later with `Overflow when unpacking long
    long`. The range is what every consumer takes: numpy's legacy seed and scikit-learn's random_state
    [0, 2**32 - 1] (torch.manual_seed takes more)."""
    import numpy as np
    import torch
    from sklearn.utils import check_random_state

    from pipeline.params import SEED_MAX
    top = parse_params(yaml.safe_load(f"seed: {SEED_MAX}")).seed
    np.random.seed(top)
    check_random_state(top)
    torch.manual_seed(top)
    torch.Generator().manual_seed(top * 100_003 + 10_000)     # pipeline.runtime's per-epoch generator
    with pytest.raises(ValueError):
        np.random.seed(top + 1)                              # the bound is numpy's, not a guess
    for bad in ("99999999999999999999999", str(SEED_MAX + 1), "-1"):
        with pytest.raises(ParamsError, match=r"'seed': Input should be (less|greater) than or equal to"):
            parse_params(yaml.safe_load(f"seed: {bad}"))
    assert parse_params({"demo": {"seed": SEED_MAX}}).demo.seed == SEED_MAX   # the demo's own seed: same range
    with pytest.raises(ParamsError, match=r"demo.*seed.*less than or equal to"):
        parse_params({"demo": {"seed": SEED_MAX + 1}})


def test_load_params_reads_1e_4_as_a_number_as_dvc_does(tmp_path):
    """PyYAML (YAML 1.1) reads `lr: 1e-4` as the string '1e-4'; DVC (YAML 1.2) as a float. The strict types
    would refuse the string, so load_params reads it as YAML 1.2 does; a quoted number is still refused."""
    f = tmp_path / "p.yaml"
    f.write_text("train_encoder: {lr: 1e-4, weight_decay: 5E-5, lambda_od: 1.5e+0}\ntrain_relation: {lr: 2.5e-3}\n")
    p = load_params(f)
    assert (p.train_encoder.lr, p.train_encoder.weight_decay, p.train_encoder.lambda_od, p.train_relation.lr) == \
        (1e-4, 5e-5, 1.5, 2.5e-3)
    f.write_text("train_encoder: {lr: '1e-4'}\nseed: 1e3\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "'train_encoder.lr': Input should be a valid number, not a string: write the number unquoted" in str(e.value)
    assert "'seed': Input should be a valid integer; got 1000.0" in str(e.value)
    f.write_text("evaluate: {ci: .inf}\n")
    with pytest.raises(ParamsError, match=r"'evaluate.ci': Input should be a finite number"):
        load_params(f)
