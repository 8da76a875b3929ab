"""Dataset adapters, split rules, the leak check and the manifest stage, on miniature trees."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import make_video
from pipeline.ingest.datasets import (MANIFEST_COLUMNS, VIDEO_KEY_COLUMNS, build_manifest, check_leaks,
                               read_manifest, write_manifest)
from pipeline.ingest.datasets.splits import assign_group_splits, split_counts
from pipeline.stages.manifest import main as manifest_main
from pipeline.params import DatasetSpec


def _videos(root: Path, *relpaths: str) -> None:
    """Tiny videos, each with its own bytes (seeded by its path): the leak check flags byte-identical files."""
    for rel in relpaths:
        make_video(root / rel, seed=zlib.crc32(rel.encode()))


def _by_id(df: pd.DataFrame) -> dict[str, pd.Series]:
    return {r.video_id: r for r in df.itertuples()}


# ----------------------------------------------------------------------------- FF++
def _ffpp_tree(root: Path, splits_dir: str = "splits") -> None:
    real = "original_sequences/youtube/c23/videos"
    _videos(root, *[f"{real}/{i:03d}.mp4" for i in range(8)], f"{real}/009.mp4")
    df_dir = "manipulated_sequences/Deepfakes/c23/videos"
    _videos(root, *[f"{df_dir}/{n}.mp4" for n in ("000_001", "001_000", "002_003", "004_005", "006_007", "008_009")])
    f2f = "manipulated_sequences/Face2Face/c23/videos"
    _videos(root, f"{f2f}/003_002.mp4", f"{f2f}/007_006.mp4")
    pairs = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}
    (root / splits_dir).mkdir(parents=True, exist_ok=True)
    for split, p in pairs.items():
        (root / splits_dir / f"{split}.json").write_text(json.dumps(p))


def _ffpp_spec(root: Path, **kw) -> DatasetSpec:
    return DatasetSpec(name="ff", type="ffpp", root=str(root), methods=["Deepfakes", "Face2Face"], **kw)


def test_ffpp_official_pairs(tmp_path: Path) -> None:
    _ffpp_tree(tmp_path)
    with pytest.warns(UserWarning, match="2 FF\\+\\+ videos"):
        df = build_manifest([_ffpp_spec(tmp_path)], seed=0)
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert len(df) == 15
    assert df.groupby("method").size().to_dict() == {"Deepfakes": 5, "Face2Face": 2, "original": 8}
    real = df[df.method == "original"]
    assert (real.label == 0).all() and (df[df.method != "original"].label == 1).all()
    assert real.groupby("split").size().to_dict() == {"test": 2, "train": 4, "val": 2}
    splits = dict(zip(df.video_id, df.split))
    assert {k: splits[k] for k in ("000_001", "001_000", "002_003", "004_005", "006_007", "003_002", "007_006")} == {
        "000_001": "train", "001_000": "train", "002_003": "train", "004_005": "val",
        "006_007": "test", "003_002": "train", "007_006": "test"}
    assert "009" not in splits and "008_009" not in splits
    fake = _by_id(df)["001_000"]
    assert (fake.identity, fake.source_id) == ("001", "000")
    assert _by_id(df)["005"].identity == "005"


def test_ffpp_leak_in_split_files_names_id(tmp_path: Path) -> None:
    _ffpp_tree(tmp_path, splits_dir=".")
    (tmp_path / "test.json").write_text(json.dumps([["006", "007"], ["001", "009"]]))
    with pytest.raises(ValueError, match="'001' in \\['test', 'train'\\]"):
        build_manifest([_ffpp_spec(tmp_path)], seed=0)


def test_ffpp_missing_split_file(tmp_path: Path) -> None:
    _ffpp_tree(tmp_path)
    (tmp_path / "splits" / "val.json").unlink()
    with pytest.raises(FileNotFoundError, match="val.json"):
        build_manifest([_ffpp_spec(tmp_path)], seed=0)


def test_ffpp_deepfakedetection_test_only(tmp_path: Path) -> None:
    _videos(tmp_path, "original_sequences/youtube/c40/videos/000.mp4",
            "original_sequences/actors/c40/videos/01__exit_phone_room.mp4",
            "manipulated_sequences/DeepFakeDetection/c40/videos/01_02__exit_phone_room__YVGY8LOK.mp4")
    spec = DatasetSpec(name="dfd", type="ffpp", root=str(tmp_path), compression="c40",
                       methods=["DeepFakeDetection"], test_only=True)
    df = build_manifest([spec], seed=0)  # no split files needed for a test-only dataset
    assert list(df.method) == ["DeepFakeDetection", "actors", "original"]
    assert list(df.label) == [1, 0, 0] and set(df.split) == {"test"}
    fake = df.iloc[0]
    assert (fake.video_id, fake.identity, fake.source_id) == ("01_02__exit_phone_room__YVGY8LOK", "actor01", "actor02")


# ----------------------------------------------------------------------------- Celeb-DF
def _celebdf_tree(root: Path, test_lines: list[str]) -> None:
    _videos(root, *[f"Celeb-real/{n}.mp4" for n in ("id0_0000", "id0_0001", "id1_0000", "id2_0000", "id3_0000", "id4_0000")])
    _videos(root, *[f"Celeb-synthesis/{n}.mp4" for n in
                    ("id0_id1_0000", "id1_id0_0000", "id2_id3_0000", "id3_id4_0000", "id4_id2_0000")])
    _videos(root, "YouTube-real/00000.mp4", "YouTube-real/00001.mp4")
    (root / "List_of_testing_videos.txt").write_text("\n".join(test_lines) + "\n")


TEST_LIST = ["1 Celeb-real/id0_0001.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4", "1 YouTube-real/00001.mp4"]


def test_celebdf_test_list_and_identity_val(tmp_path: Path) -> None:
    _celebdf_tree(tmp_path, TEST_LIST)
    spec = DatasetSpec(name="cdf", type="celebdf", root=str(tmp_path), val_fraction=0.34)
    df = build_manifest([spec], seed=3)
    assert len(df) == 13
    assert df.groupby("method").size().to_dict() == {"Celeb-real": 6, "Celeb-synthesis": 5, "YouTube-real": 2}
    test = df[df.split == "test"]
    assert sorted(zip(test.video_id, test.label)) == [("00001", 0), ("id0_0001", 0), ("id0_id1_0000", 1)]
    rest = df[df.split != "test"]
    assert set(rest.split) <= {"train", "val"}
    groups = rest.identity.where(rest.identity != "", "yt/" + rest.video_id)
    per_group = rest.groupby(groups)["split"].agg(set)
    assert all(len(s) == 1 for s in per_group)  # each identity in one split
    assert sorted(s.pop() for s in per_group) == ["train"] * 4 + ["val"] * 2  # 6 groups, round(6 * .34) = 2
    fake = _by_id(df)["id2_id3_0000"]
    assert (fake.identity, fake.source_id, fake.label) == ("id2", "id3", 1)


def test_celebdf_label_inversion_checked(tmp_path: Path) -> None:
    _celebdf_tree(tmp_path, ["0 Celeb-real/id0_0001.mp4"])  # 0 means FAKE in the list: contradicts folder
    with pytest.raises(ValueError, match="id0_0001"):
        build_manifest([DatasetSpec(name="cdf", type="celebdf", root=str(tmp_path))], seed=0)


# ----------------------------------------------------------------------------- DFDC
def _dfdc_tree(root: Path) -> None:
    meta0 = {"a.mp4": {"label": "REAL", "original": None, "split": "train"},
             "b.mp4": {"label": "FAKE", "original": "a.mp4", "split": "train"},
             "c.mp4": {"label": "FAKE", "original": "a.mp4", "split": "train"},
             "d.mp4": {"label": "REAL", "original": None, "split": "train"},
             "e.mp4": {"label": "FAKE", "original": "d.mp4", "split": "train"},
             "f.mp4": {"label": "REAL", "original": None, "split": "train"},
             "g.mp4": {"label": "FAKE", "original": "z.mp4", "split": "train"}}
    meta1 = {"h.mp4": {"label": "REAL", "original": None, "split": "train"},
             "i.mp4": {"label": "FAKE", "original": "h.mp4", "split": "train"},
             "missing.mp4": {"label": "REAL", "original": None, "split": "train"}}
    for part, meta in (("dfdc_train_part_0", meta0), ("dfdc_train_part_1", meta1)):
        _videos(root, *[f"{part}/{n}" for n in meta if n != "missing.mp4"])
        (root / part / "metadata.json").write_text(json.dumps(meta))
    _videos(root, "test/t1.mp4", "test/t2.mp4")
    (root / "test" / "labels.csv").write_text("filename,label\nt1.mp4,1\nt2.mp4,0\n")


def test_dfdc_groups_and_test_folder(tmp_path: Path) -> None:
    _dfdc_tree(tmp_path)
    spec = DatasetSpec(name="dfdc", type="dfdc", root=str(tmp_path), val_fraction=0.2)
    with pytest.warns(UserWarning, match="1 DFDC videos"):
        df = build_manifest([spec], seed=0)
    assert len(df) == 11
    assert df.groupby(["method", "label"]).size().to_dict() == {("fake", 1): 6, ("real", 0): 5}
    by = _by_id(df)
    assert (by["t1"].split, by["t1"].label, by["t2"].split, by["t2"].label) == ("test", 1, "test", 0)
    assert (by["b"].source_id, by["a"].source_id) == ("a", "")
    train = df[df.split != "test"]
    group = train.source_id.where(train.source_id != "", train.video_id)
    per_group = train.groupby(group)["split"].agg(set)
    assert sorted(per_group.index) == ["a", "d", "f", "h", "z"]
    assert all(len(s) == 1 for s in per_group)  # a fake always shares its original's split
    assert sorted(s.pop() for s in per_group) == ["train"] * 4 + ["val"]  # round(5 * .2) = 1 group


# ----------------------------------------------------------------------------- plain
def test_plain_with_split_file(tmp_path: Path) -> None:
    _videos(tmp_path, *[f"real/r{i}.mp4" for i in range(4)], "fake/faceswap/f0.mp4", "fake/faceswap/f1.mp4",
            "fake/x.mp4", "fake/sbi/s0.mp4")
    pd.DataFrame({
        "path": ["real/r0.mp4", "real/r1.mp4", "real/r2.mp4", "real/r3.mp4",
                 "fake/faceswap/f0.mp4", "fake/faceswap/f1.mp4", "fake/x.mp4"],
        "split": ["train", "train", "val", "test", "train", "test", "val"],
        "identity": ["p0", "p0", "p1", "p2", "p0", "p2", "p1"],
        "source_id": ["", "", "", "", "p1", "p2", ""],
        "mask_path": ["", "", "", "", "masks/f0.npz", "", ""],
    }).to_csv(tmp_path / "splits.csv", index=False)
    with pytest.warns(UserWarning, match="1 videos not listed"):
        df = build_manifest([DatasetSpec(name="demo", type="plain", root=str(tmp_path))], seed=0)
    assert list(zip(df.method, df.video_id, df.label, df.split)) == [
        ("faceswap", "f0", 1, "train"), ("faceswap", "f1", 1, "test"), ("fake", "x", 1, "val"),
        ("real", "r0", 0, "train"), ("real", "r1", 0, "train"), ("real", "r2", 0, "val"), ("real", "r3", 0, "test")]
    f0 = _by_id(df)["f0"]
    assert f0.mask_path == (tmp_path / "masks/f0.npz").as_posix() and f0.source_id == "p1"
    assert f0.path == (tmp_path / "fake/faceswap/f0.mp4").as_posix() and f0.size_bytes > 0


def _plain_tree(root: Path, n: int = 5) -> None:
    _videos(root, *[f"real/r{i}.mp4" for i in range(n)], *[f"fake/faceswap/f{i}.mp4" for i in range(n)])


def test_plain_seeded_split_without_file(tmp_path: Path) -> None:
    _plain_tree(tmp_path)
    df = build_manifest([DatasetSpec(name="demo", type="plain", root=str(tmp_path))], seed=0)
    # 5 videos per method, val .15 / test .2 -> 3 / 1 / 1 per method
    assert df.groupby(["method", "split"]).size().to_dict() == {
        ("faceswap", "test"): 1, ("faceswap", "train"): 3, ("faceswap", "val"): 1,
        ("real", "test"): 1, ("real", "train"): 3, ("real", "val"): 1}


def test_determinism_by_seed(tmp_path: Path) -> None:
    _plain_tree(tmp_path, n=8)
    specs = [DatasetSpec(name="demo", type="plain", root=str(tmp_path))]
    first = build_manifest(specs, seed=7)
    pd.testing.assert_frame_equal(first, build_manifest(specs, seed=7))
    assert list(first[list(VIDEO_KEY_COLUMNS)].itertuples(index=False)) == sorted(
        first[list(VIDEO_KEY_COLUMNS)].itertuples(index=False))
    others = [list(build_manifest(specs, seed=s).split) for s in range(3)]
    assert any(o != list(first.split) for o in others)


def test_test_only_and_leak_across_datasets(tmp_path: Path) -> None:
    _plain_tree(tmp_path, n=2)
    spec = DatasetSpec(name="xd", type="plain", root=str(tmp_path), test_only=True)
    assert set(build_manifest([spec], seed=0).split) == {"test"}
    other = DatasetSpec(name="same_files", type="plain", root=str(tmp_path), val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(ValueError, match="file path in more than one split"):
        build_manifest([spec, other], seed=0)


def test_split_counts() -> None:
    assert split_counts(5, 0.15, 0.2) == (3, 1, 1)
    assert split_counts(2, 0.15, 0.2) == (2, 0, 0)
    assert split_counts(10, 0.15, 0.2) == (6, 2, 2)
    assert split_counts(1, 0.5, 0.5) == (1, 0, 0)
    assert assign_group_splits(["b", "a"], 0.0, 0.0, seed=0) == {"a": "train", "b": "train"}


# ----------------------------------------------------------------------------- leak check
def _rows(*specs: tuple[str, str, str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": d, "method": "m", "video_id": v, "path": f"/x/{d}/{v}", "label": 0,
                          "split": s, "identity": i, "source_id": "", "mask_path": "", "size_bytes": 1}
                         for d, v, s, i in specs])


def test_check_leaks_identity_and_celebdf_exemption() -> None:
    df = _rows(("c", "v1", "train", "id7"), ("c", "v2", "test", "id7"))
    with pytest.raises(ValueError, match="'id7' in \\['test', 'train'\\]"):
        check_leaks(df)
    check_leaks(df, {"c": "celebdf"})  # official Celeb-DF test list may share people with train
    with pytest.raises(ValueError, match="id7"):
        check_leaks(_rows(("c", "v1", "train", "id7"), ("c", "v2", "val", "id7")), {"c": "celebdf"})
    with pytest.raises(ValueError, match="c/m/v1"):
        check_leaks(_rows(("c", "v1", "train", ""), ("c", "v1", "train", "")))


# ----------------------------------------------------------------------------- io and stage
def test_read_write_manifest(tmp_path: Path) -> None:
    _ffpp_tree(tmp_path / "ff")
    with pytest.warns(UserWarning):
        df = build_manifest([_ffpp_spec(tmp_path / "ff")], seed=0)
    write_manifest(df, tmp_path / "out" / "manifest.csv")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["manifest.csv"]  # no temp file left
    pd.testing.assert_frame_equal(read_manifest(tmp_path / "out" / "manifest.csv"), df)  # "000" stays a string
    bad = tmp_path / "bad.csv"
    df.drop(columns=["split", "mask_path"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad\.csv.*missing columns \['split', 'mask_path'\]"):
        read_manifest(bad)


def test_manifest_stage_main(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _plain_tree(tmp_path / "demo")
    out = tmp_path / "data" / "manifest.csv"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 1, "data": {
        "manifest": str(out), "datasets": [{"name": "demo", "type": "plain", "root": str(tmp_path / "demo")}]}}))
    manifest_main(["--params", str(params)])
    assert len(read_manifest(out)) == 10
    line = capsys.readouterr().out.strip()
    assert "10 videos" in line and "demo/train 3 real 3 fake" in line and "\n" not in line
    params.write_text(yaml.safe_dump({"data": {"manifest": str(out), "datasets": [
        {"name": "ghost", "type": "ffpp", "root": str(tmp_path / "nowhere")}]}}))
    with pytest.raises(FileNotFoundError, match="dataset 'ghost'.*nowhere"):
        manifest_main(["--params", str(params)])


def test_holdout_methods_leave_a_family_out_of_train_and_val_only(tmp_path: Path) -> None:
    """Leave-one-family-out: the held-out fakes stay in test, and nowhere else."""
    _videos(tmp_path, *[f"real/r{i}.mp4" for i in range(5)], *[f"fake/faceswap/f{i}.mp4" for i in range(5)],
            *[f"fake/sbi/s{i}.mp4" for i in range(5)])
    spec = DatasetSpec(name="demo", type="plain", root=str(tmp_path))
    full = build_manifest([spec], seed=0)
    held = build_manifest([spec], seed=0, holdout_methods=["sbi"])
    assert set(held.loc[held.method == "sbi", "split"]) == {"test"}
    assert (held.method == "sbi").sum() == ((full.method == "sbi") & (full.split == "test")).sum() >= 1
    others = lambda d: d[d.method != "sbi"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(others(held), others(full))       # everything else unchanged
    with pytest.raises(ValueError, match=r"no fake videos of \['mouth'\].*\['faceswap', 'sbi'\]"):
        build_manifest([spec], seed=0, holdout_methods=["mouth"])


def test_broken_json_names_the_file_and_the_line(tmp_path: Path) -> None:
    """Regression: a bare JSONDecodeError with no file name."""
    _ffpp_tree(tmp_path / "ff")
    (tmp_path / "ff" / "splits" / "test.json").write_text('[["006", "007"],\n ["008" "009"]]')
    with pytest.raises(ValueError, match=r"splits/test\.json: not valid JSON at line 2, column 9"):
        build_manifest([_ffpp_spec(tmp_path / "ff")], seed=0)
    _dfdc_tree(tmp_path / "dfdc")
    (tmp_path / "dfdc" / "dfdc_train_part_1" / "metadata.json").write_text('{"h.mp4": {"label": "REAL",}}')
    with pytest.raises(ValueError, match=r"dataset 'dfdc': .*dfdc_train_part_1/metadata\.json: not valid JSON at "
                                         r"line 1"):
        build_manifest([DatasetSpec(name="dfdc", type="dfdc", root=str(tmp_path / "dfdc"))], seed=0)


# ----------------------------------------------------------------------------- issue 14: the manifest follows the data
def test_ffpp_fakes_only_at_another_compression_is_an_error_naming_the_folders(tmp_path: Path) -> None:
    """Regression: originals at c23 and fakes only at c40 gave 6 real and 0 fake videos, exit 0."""
    _ffpp_tree(tmp_path)
    for method in ("Deepfakes", "Face2Face"):
        (tmp_path / f"manipulated_sequences/{method}/c23").rename(tmp_path / f"manipulated_sequences/{method}/c40")
    spec = DatasetSpec(name="ff", type="ffpp", root=str(tmp_path))   # default methods: folders may be missing
    with pytest.warns(UserWarning, match="method folder missing"), \
            pytest.warns(UserWarning, match="1 FF\\+\\+ videos are in no official split"), pytest.raises(ValueError) as e:
        build_manifest([spec], seed=0)
    msg = str(e.value)
    assert "dataset 'ff' (type ffpp): split 'train' has 4 real and 0 fake videos" in msg
    assert f"{tmp_path}/manipulated_sequences/Deepfakes/c23/videos (missing)" in msg
    assert f"{tmp_path}/original_sequences/youtube/c23/videos\n" in msg
    assert "compressions present under" in msg and "c23, c40" in msg


def test_plain_without_fakes_in_train_is_an_error(tmp_path: Path) -> None:
    _videos(tmp_path, *[f"real/r{i}.mp4" for i in range(5)])
    with pytest.raises(ValueError, match=r"split 'train' has 3 real and 0 fake videos.*\n.*/real"):
        build_manifest([DatasetSpec(name="demo", type="plain", root=str(tmp_path))], seed=0)
    assert set(build_manifest([DatasetSpec(name="demo", type="plain", root=str(tmp_path), test_only=True)],
                              seed=0).split) == {"test"}   # a test-only dataset may be one-sided


def test_dfdc_videos_in_no_metadata_file_are_warned_with_count_and_examples(tmp_path: Path) -> None:
    _dfdc_tree(tmp_path)
    _videos(tmp_path, "dfdc_train_part_0/stray1.mp4", "dfdc_train_part_1/stray2.mp4", "test/stray3.mp4")
    with pytest.warns(UserWarning) as record:
        df = build_manifest([DatasetSpec(name="dfdc", type="dfdc", root=str(tmp_path), val_fraction=0.2)], seed=0)
    msgs = [str(w.message) for w in record]
    assert ("dataset 'dfdc': 3 DFDC videos on disk are in no metadata.json or test/labels.csv, dropped: "
            "dfdc_train_part_0/stray1.mp4, dfdc_train_part_1/stray2.mp4, test/stray3.mp4") in msgs
    assert not {"stray1", "stray2", "stray3"} & set(df.video_id)


def test_same_ffpp_twice_train_and_test_only_is_a_leak(tmp_path: Path) -> None:
    """Regression: FF++ at c23 to train and the same FF++ at c40 as test_only put the same people in both."""
    _ffpp_tree(tmp_path)
    c40 = ["original_sequences/youtube/c40/videos/001.mp4", "manipulated_sequences/Deepfakes/c40/videos/002_003.mp4"]
    _videos(tmp_path, *c40)
    train = _ffpp_spec(tmp_path)
    test = DatasetSpec(name="ff40", type="ffpp", root=str(tmp_path), compression="c40", methods=["Deepfakes"],
                       test_only=True)
    with pytest.warns(UserWarning), pytest.raises(ValueError) as e:
        build_manifest([train, test], seed=0)
    msg = str(e.value)
    assert "identity or source id in two datasets and different splits" in msg
    assert "'ffpp:001' in ['ff/train', 'ff40/test']" in msg and "'ffpp:003' in ['ff/train', 'ff40/test']" in msg


def test_byte_identical_files_in_different_splits_name_both_files(tmp_path: Path) -> None:
    _plain_tree(tmp_path)
    df = build_manifest([DatasetSpec(name="demo", type="plain", root=str(tmp_path))], seed=0)
    train = df[(df.split == "train") & (df.method == "real")].iloc[0]
    test = df[(df.split == "test") & (df.method == "real")].iloc[0]
    Path(test.path).write_bytes(Path(train.path).read_bytes())   # the same clip under another name
    with pytest.raises(ValueError, match="byte-identical files in different splits: ") as e:
        build_manifest([DatasetSpec(name="demo", type="plain", root=str(tmp_path))], seed=0)
    assert f"{train.path} (train)" in str(e.value) and f"{test.path} (test)" in str(e.value)


def test_symlink_loop_and_directory_named_like_a_video_are_reported(tmp_path: Path) -> None:
    _plain_tree(tmp_path)
    (tmp_path / "real" / "x.mp4").mkdir()
    (tmp_path / "fake" / "y.mp4").mkdir()
    (tmp_path / "real" / "loop.mp4").symlink_to("loop.mp4")
    with pytest.warns(UserWarning) as record:
        df = build_manifest([DatasetSpec(name="demo", type="plain", root=str(tmp_path))], seed=0)
    msgs = [str(w.message) for w in record]
    assert (f"{tmp_path / 'real'}: skipped 2 entries named like videos: loop.mp4 (symbolic link loop), x.mp4 "
            "(a directory named like a video, not a video file)") in msgs
    assert f"{tmp_path / 'fake'}: skipped 1 entries named like videos: y.mp4 (a directory named like a video, " \
           "not a video file)" in msgs
    assert len(df) == 10 and "y.mp4" not in set(df.method)


def test_train_identities_keep_nested_subsets_of_train_only() -> None:
    """The learning curve's data: k training identities, nested as k grows; val and test untouched."""
    from pipeline.ingest.datasets import keep_train_identities
    rows = [dict(dataset="d", identity=f"p{i}", split="train" if i < 6 else ("val" if i < 8 else "test"),
                 label=lab, video_id=f"p{i}_{lab}") for i in range(10) for lab in (0, 1)]
    df = pd.DataFrame(rows)
    kept = {}
    for k in (1, 3, 6):
        sub = keep_train_identities(df, k, seed=0)
        kept[k] = set(sub.loc[sub.split == "train", "identity"])
        assert len(kept[k]) == k
        assert (sub.split == "train").sum() == 2 * k          # every video of a kept identity stays
        pd.testing.assert_frame_equal(sub[sub.split != "train"].reset_index(drop=True),
                                      df[df.split != "train"].reset_index(drop=True))
    assert kept[1] < kept[3] < kept[6] == {f"p{i}" for i in range(6)}
    with pytest.raises(ValueError, match="7 asked, the training split has only 6 identities"):
        keep_train_identities(df, 7, seed=0)
    only_real = df[~((df.split == "train") & (df.label == 1) & (df.identity != "p9"))]
    with pytest.raises(ValueError, match="only real videos"):
        keep_train_identities(only_real, 2, seed=0)
