"""The embedded demo dataset: layout, decodability, identity-disjoint splits, masks, determinism."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

av = pytest.importorskip("av")
pytest.importorskip("facenet_pytorch")

from pipeline.ingest.demo import sources  # noqa: E402
from pipeline.ingest.demo.generate import SPLIT_COLUMNS, generate_demo  # noqa: E402
from pipeline.params import DemoParams  # noqa: E402

TINY_SOURCES = ["single_face.jpg", "single_face.mp4", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "astronaut.png",
                "grace_hopper.jpg", "obama.jpg", "obama2.jpg", "biden.jpg", "carphone_pristine.mp4"]
FRAMES, SIZE = 12, 96
LONDON = ["001", "002", "010"]


def _params(**kw) -> DemoParams:
    base = dict(frames=FRAMES, size=SIZE, clips_per_source=1, sources=TINY_SOURCES, crf=18, london=LONDON)
    base.update(kw)
    return DemoParams(**base)


def _have_sources() -> bool:
    try:
        for n in TINY_SOURCES:
            sources.fetch(n)
        return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _have_sources(), reason="demo source media not available")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_a")
    df = generate_demo(_params(), seed=0, out_dir=out)
    return out, df


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_layout_and_decoding(demo):
    out, df = demo
    assert (out / "README.txt").read_text().lower().count("testing") >= 1
    assert (out / "summary.json").exists()
    csv = pd.read_csv(out / "splits.csv", keep_default_na=False)
    assert list(csv.columns) == SPLIT_COLUMNS
    assert set(csv.split) <= {"train", "val", "test"}
    for p in csv.path:
        assert p.startswith("real/") or p.startswith("fake/")
        v = _decode(out / p)
        assert v.shape == (FRAMES, SIZE, SIZE, 3), p
    for p in csv[csv.path.str.startswith("fake/")].path:
        assert len(Path(p).parts) == 3  # fake/<method>/<id>.mp4
    # one file per row: sources with the same stem (single_face.mp4 / .jpg) must not overwrite each other
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert on_disk == sorted(csv.path)


def test_splits_identity_disjoint_and_balanced(demo):
    out, _ = demo
    df = pd.read_csv(out / "splits.csv", keep_default_na=False)
    df["label"] = df.path.str.startswith("fake/").astype(int)
    df["method"] = [p.split("/")[1] if p.startswith("fake/") else "real" for p in df.path]
    for col in ("identity", "source_id"):
        per = df.groupby(col).split.nunique()
        assert (per == 1).all(), per[per > 1]
    # a fake's donor (source_id = a real clip id) lives in the fake's split
    real_split = {Path(p).stem: s for p, s in zip(df.path, df.split) if p.startswith("real/")}
    for _, r in df[df.label == 1].iterrows():
        assert real_split[r.source_id] == r.split
    assert set(df.split) == {"train", "val", "test"}
    for s, d in df.groupby("split"):
        assert set(d.label) == {0, 1}, s
    assert df[df.label == 1].method.nunique() >= 3
    assert df.groupby("split").apply(lambda d: d[d.label == 1].method.nunique()).min() >= 2


def test_london_people_are_in_and_described(demo):
    out, df = demo
    people = pd.read_csv(out / "people.csv", dtype=str, keep_default_na=False)
    assert list(people.columns) == ["identity", "age", "gender", "ethnicity"]
    assert sorted(people.identity) == [f"london_{i}" for i in LONDON]
    assert set(people.identity) <= set(df.identity)
    assert people.set_index("identity").loc["london_001", "gender"] == "female"
    real = df[df.path.str.startswith("real/london_")]
    assert len(real) == len(LONDON)                          # clips_per_source clips per person
    fakes = df[df.path.str.startswith("fake/") & df.identity.str.startswith("london_")]
    assert len(fakes) == len(LONDON)                         # every London clip is also a fake's target
    assert "Face Research Lab London Set" in (out / "README.txt").read_text()


def test_masks(demo):
    out, df = demo
    fakes = df[df.label == 1]
    assert len(fakes) and (fakes.mask_path != "").all()
    assert (df[df.label == 0].mask_path == "").all()
    for p, mp in zip(fakes.path, fakes.mask_path):
        m = np.load(out / mp)["masks"]
        assert m.dtype == np.uint8 and m.shape == (FRAMES, SIZE, SIZE)
        c = SIZE // 2
        centre = m[:, c - SIZE // 6:c + SIZE // 4, c - SIZE // 6:c + SIZE // 6]
        assert (centre.reshape(FRAMES, -1).max(1) > 0).all(), mp       # non-empty inside the face
        assert (m[:, :6, :6] == 0).all() and (m[:, -6:, -6:] == 0).all(), mp  # nothing in the corners


def test_mtcnn_finds_faces(demo):
    from pipeline.ingest.demo.faces import detect
    out, df = demo
    picks = pd.concat([df[df.label == 0].head(3), df[df.label == 1].groupby("method").head(1)])
    frames = np.stack([_decode(out / p)[FRAMES // 2] for p in picks.path])
    _, _, probs = detect(frames)
    assert np.isfinite(probs).all(), list(picks.path[~np.isfinite(probs)])


def _mask_temporal_change(m: np.ndarray) -> float:
    s = m.reshape(len(m), -1).astype(np.float64).mean(1)
    return float(np.abs(np.diff(s)).mean() / max(s.mean(), 1e-9))


def test_sbi_constant_flicker_varies():
    from pipeline.ingest.demo.manipulations import manipulate
    from pipeline.ingest.demo.motion import still_clip, still_faces
    size, n = 96, 16
    face = still_faces(sources.fetch("grace_hopper.jpg"), size)[0]
    donor = still_faces(sources.fetch("biden.jpg"), size)[0]
    a = still_clip(face, n, size, 25, np.random.default_rng(0))
    b = still_clip(donor, n, size, 25, np.random.default_rng(1))
    fr_s, m_s = manipulate("sbi", a.frames, a.landmarks, np.random.default_rng(2))
    fr_f, m_f = manipulate("flicker_swap", a.frames, a.landmarks, np.random.default_rng(2), b.frames, b.landmarks)
    # blended-region change relative to the real frames, per frame
    d_s = np.abs(fr_s.astype(float) - a.frames).mean((1, 2, 3))
    d_f = np.abs(fr_f.astype(float) - a.frames).mean((1, 2, 3))
    assert _mask_temporal_change(m_s) < 0.03
    assert _mask_temporal_change(m_f) > 3 * _mask_temporal_change(m_s)
    assert np.std(d_f) / d_f.mean() > 2 * np.std(d_s) / d_s.mean()


def _file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_bytes_across_processes(demo, tmp_path):
    """The fixture ran 2 worker processes; this run is serial, in this (long-lived) test process, after
    other encodes: every file, mp4 included, must be byte-identical (libx264 used to read memory it had
    not written and gave different bitstreams depending on what the process had done before)."""
    out, _ = demo
    again = tmp_path / "again"
    generate_demo(_params(num_workers=1), seed=0, out_dir=again)
    a, b = _file_hashes(out), _file_hashes(again)
    assert sorted(a) == sorted(b)
    assert any(k.endswith(".mp4") for k in a)
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"{len(differ)} of {len(a)} files differ, e.g. {differ[:3]}"


def test_seed_changes_output(demo, tmp_path):
    out, _ = demo
    other = tmp_path / "other"
    generate_demo(_params(), seed=1, out_dir=other)
    p = "real/grace_hopper_00.mp4"
    assert not np.array_equal(_decode(out / p)[0], _decode(other / p)[0])


def test_disabled_stage_writes_marker(tmp_path, monkeypatch):
    from pipeline.stages import demo as demo_data
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("demo:\n  enabled: false\n  out_dir: data/demo\n")
    assert demo_data.main(["--params", "params.yaml"]) == 0
    assert (tmp_path / "data/demo/DISABLED").exists()
    assert [p.name for p in (tmp_path / "data/demo").iterdir()] == ["DISABLED"]
