"""A stage that refuses its input (pipeline.errors.InputRefused) ends with one message naming the key or the
files and the fix, exit status 1 and no traceback; under `dvc repro` the message says which outputs DVC had
already removed and that `dvc checkout <stage>` brings them back. Real processes: the stage module run as
`python -m`, and a real `dvc repro` in a git + DVC workspace of its own (tests/workspace.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workspace import PROJECT_ROOT, _env, make_workspace, run_dvc


def _stage(module: str, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**_env(), "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    env.pop("DVC_STAGE", None)
    env.pop("DVC_ROOT", None)
    return subprocess.run([sys.executable, "-m", f"pipeline.stages.{module}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_train_relation_with_mask_rate_1_5_says_the_key_and_the_fix_without_a_traceback(tmp_path):
    """Regression: `mask.rate: 1.5` ended train_relation in a Python traceback (ParamsError)."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["mask"]["rate"] = 1.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = _stage("train_relation", tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert res.stderr.startswith("train_relation: params.yaml: invalid parameters:\n"
                                 "  - 'mask.rate': Input should be less than or equal to 1")
    assert "fix: correct the key(s) named above in the params file" in res.stderr
    assert "dvc checkout" not in res.stderr                        # not under dvc repro: nothing was removed


def test_a_bug_keeps_its_traceback_and_MRL_TRACEBACK_shows_it_for_a_refusal(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: true\n")
    res = _stage("manifest", tmp_path, env={"MRL_TRACEBACK": "1"})
    assert res.returncode == 1 and "Traceback" in res.stderr and "ParamsError" in res.stderr
    res = _stage("manifest", tmp_path, "--params", "missing.yaml")   # ParamsError too: the file is named
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("manifest: missing.yaml: params file not found")
    res = _stage("manifest", tmp_path, "--no-such-flag")             # argparse: its own message, status 2
    assert res.returncode == 2 and "unrecognized arguments" in res.stderr
    probe = tmp_path / "probe.py"                                    # an error that is no refusal
    probe.write_text("import pipeline.stages\nraise KeyError('a bug')\n")
    res = subprocess.run([sys.executable, str(probe)], cwd=tmp_path, capture_output=True, text=True,
                         env={**_env(), "PYTHONPATH": str(PROJECT_ROOT)})
    assert res.returncode == 1 and "Traceback" in res.stderr and "KeyError: 'a bug'" in res.stderr


def _videos(root: Path, n: int = 10) -> None:
    for kind in ("real", "fake"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):                                           # distinct bytes: no identical-file leak
            (root / kind / f"{kind}{i:02d}.mp4").write_bytes(f"{kind} video {i}".encode() * (i + 1))


@pytest.mark.slow      # a git + DVC workspace and six dvc commands (user time ~20 s; minutes on a loaded machine)
def test_dvc_repro_of_a_refusing_stage_names_the_cause_and_dvc_checkout(tmp_path):
    """`dvc repro` of the manifest stage with `seed: true`, then with a same-stem copy (x.mp4 + x.avi, the same
    bytes): one message each, no traceback; DVC has removed data/manifest.csv and `dvc checkout manifest`
    brings it back, as the message says."""
    ws = make_workspace(tmp_path / "ws")
    _videos(ws / "data" / "demo")
    run_dvc(ws, "repro", "-s", "scan")
    run_dvc(ws, "repro", "-s", "manifest")
    manifest = (ws / "data" / "manifest.csv").read_bytes()

    params = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(params.replace("seed: 0\n", "seed: true\n", 1))
    with pytest.raises(RuntimeError) as e:
        run_dvc(ws, "repro", "-s", "manifest")
    out = str(e.value)
    assert "Traceback" not in out
    assert ("manifest: params.yaml: invalid parameters:\n  - 'seed': Input should be a valid integer, not a "
            "boolean (true/false); got True\nfix: correct the key(s) named above") in out
    assert ("dvc repro removed this stage's outputs before running it; until it runs again, `dvc checkout "
            "manifest` brings back data/manifest.csv (the last committed ones)") in out
    assert not (ws / "data" / "manifest.csv").exists()               # what DVC did before the stage ran
    run_dvc(ws, "checkout", "manifest")
    assert (ws / "data" / "manifest.csv").read_bytes() == manifest   # ... and what the message says undoes it

    (ws / "params.yaml").write_text(params)
    real = ws / "data" / "demo" / "real"
    (real / "real03.avi").write_bytes((real / "real03.mp4").read_bytes())
    run_dvc(ws, "repro", "-s", "scan")
    with pytest.raises(RuntimeError) as e:
        run_dvc(ws, "repro", "-s", "manifest")
    out = str(e.value)
    assert "Traceback" not in out
    assert "manifest: manifest leak check failed:\n  - (dataset, method, video_id) listed more than once: " \
           "'demo/real/real03'" in out
    assert "fix: each video once and in one split: remove or move the duplicate files" in out
    assert "`dvc checkout manifest` brings back data/manifest.csv" in out


def test_a_truncated_encoder_file_is_named_not_blamed_on_the_relation_model(tmp_path, capsys):
    """Regression: a truncated models/encoder.pt made evaluate say `models/relation.pt: trained on features of
    another encoder`; it names the broken file, with the same words as `mrl detect` (one reader:
    pipeline.model_io.read_model_file)."""
    from test_detect import TINY, save_tiny_model

    from pipeline.cli import main
    from pipeline.errors import InputRefused, refusal_message
    from pipeline.params import parse_params
    from pipeline.scoring.evaluation import evaluate

    p = parse_params(TINY)
    ep, rp = save_tiny_model(tmp_path, p)
    whole = ep.read_bytes()
    ep.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputRefused) as e:
        evaluate(p.evaluate, tmp_path / "features.h5", rp, ep, tmp_path / "crops", seed=0, device="cpu")
    said = refusal_message(e.value, "evaluate")
    assert said.startswith(f"evaluate: {ep}: not a model file this project wrote (") and "another encoder" not in said
    assert "fix: the file is damaged (e.g. cut short)" in said and "`dvc checkout`" in said
    assert main(["detect", str(tmp_path / "x.mp4"), "--encoder", str(ep), "--relation", str(rp),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert f"detect: cannot load the model: {ep}: not a model file this project wrote (" in capsys.readouterr().err

    ep.write_bytes(whole)                                      # a whole encoder file, but another one
    other = tmp_path / "other"
    other.mkdir()
    save_tiny_model(other, p, seed=1)
    (other / "encoder.pt").replace(ep)
    with pytest.raises(InputRefused, match=f"{rp}: trained on features of another encoder than {ep}"):
        evaluate(p.evaluate, tmp_path / "features.h5", rp, ep, tmp_path / "crops", seed=0, device="cpu")


def test_a_broken_feature_cache_is_named_with_its_fix_without_a_traceback(tmp_path):
    """A feature cache that is not HDF5 (cut short, overwritten) ended train_relation in a traceback
    (FeatureCacheError was no refusal); it is one now, as every error that names an input is."""
    from feature_cache import FeatureCacheError
    from pipeline.errors import InputRefused
    from pipeline.ingest.demo.sources import SourceError
    from pipeline.scoring.paired import ComparisonError

    assert all(issubclass(e, InputRefused) for e in (FeatureCacheError, SourceError, ComparisonError))
    (tmp_path / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "features.h5").write_bytes(b"not HDF5 at all")
    res = _stage("train_relation", tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    said = res.stderr[res.stderr.index("train_relation: "):]
    assert said.startswith("train_relation: feature cache data/features.h5: not a readable HDF5 file")
    assert "fix: the cache is cache_features' output: `dvc repro` writes it again" in said
