"""feature_cache: round trip, atomic writes, and every refusal, on real HDF5 files."""
from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from feature_cache import (SCHEMA_VERSION, FeatureCacheError, FeatureCacheWriter, FeatureDataset,
                           open_cache, sha256_file)

T, N, C = 3, 4, 5
ENC = hashlib.sha256(b"encoder-a").hexdigest()
OTHER = hashlib.sha256(b"encoder-b").hexdigest()


def _data(seed: int = 0):
    """10 windows of 4 videos; two videos share id '000' in different methods."""
    rng = np.random.default_rng(seed)
    keys = [("demo", "real", "000", 0), ("demo", "real", "000", 1), ("demo", "real", "001", 0),
            ("demo", "faceswap", "000", 0), ("demo", "faceswap", "000", 1), ("demo", "faceswap", "000", 2),
            ("demo", "sbi", "007", 0), ("other", "real", "x", 0), ("other", "real", "x", 1),
            ("other", "sbi", "y", 0)]
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1])
    splits = ["train", "train", "val", "train", "train", "val", "test", "test", "test", "test"]
    vertices = rng.standard_normal((len(keys), T, N, C)).astype(np.float32)
    return vertices, labels, keys, splits


def _write(path, batches=(4, 3, 3), enc=ENC, **kw):
    v, y, k, s = _data()
    with FeatureCacheWriter(path, T, N, C, encoder_sha256=enc, params={"encoder": {"heads": N}}, **kw) as w:
        lo = 0
        for b in batches:
            # first batch as a torch tensor, like the stage does, the rest as arrays
            vb = torch.from_numpy(v[lo:lo + b]) if lo == 0 else v[lo:lo + b]
            w.add(vb, y[lo:lo + b], k[lo:lo + b], s[lo:lo + b])
            lo += b
    return v, y, k, s


def test_the_same_content_gives_the_same_bytes(tmp_path):
    """The file records nothing about when it was written: two writes of the same vertices, more than a
    second apart (the old ``created`` attribute had a resolution of one second), are byte-identical, so
    DVC sees cache_features' output unchanged and does not re-run the stages after it. Files of the same
    schema that carry the old ``created`` attribute still open, and report it."""
    import time

    _write(tmp_path / "a.h5")
    time.sleep(1.1)
    _write(tmp_path / "b.h5")
    assert sha256_file(tmp_path / "a.h5") == sha256_file(tmp_path / "b.h5")
    with h5py.File(tmp_path / "b.h5", "a") as f:
        f.attrs["created"] = "2026-11-20T10:00:00+00:00"
    assert open_cache(tmp_path / "b.h5").created == "2026-11-20T10:00:00+00:00"


def test_round_trip_values_labels_keys_and_metadata(tmp_path):
    path = tmp_path / "features.h5"
    v, y, k, s = _write(path)
    info = open_cache(path, expect_encoder_sha256=ENC)
    assert info.schema_version == SCHEMA_VERSION and info.n_windows == 10 and info.shape == (T, N, C)
    assert info.encoder_sha256 == ENC and info.params == {"encoder": {"heads": N}}
    assert info.created is None and len(info.content_sha256) == 64
    np.testing.assert_array_equal(info.read_vertices(), v)
    np.testing.assert_array_equal(info.read_vertices([6, 1, 6]), v[[6, 1, 6]])

    ds = FeatureDataset(path)
    assert len(ds) == 10
    assert list(ds.keys.columns) == ["dataset", "method", "video_id", "window", "split", "label", "row"]
    assert [tuple(r) for r in ds.keys[["dataset", "method", "video_id", "window"]].itertuples(index=False)] == k
    assert ds.keys["split"].tolist() == s and ds.keys["label"].tolist() == y.tolist()
    for i in (0, 5, 9):
        x, label, idx = ds[i]
        assert x.dtype == torch.float32 and x.shape == (T, N, C) and idx == i
        np.testing.assert_array_equal(x.numpy(), v[i])
        assert label.dtype == torch.float32 and float(label) == y[i]


@pytest.mark.parametrize("in_memory", [True, False])
def test_split_filter_keeps_keys_aligned(tmp_path, in_memory):
    path = tmp_path / "features.h5"
    v, y, k, s = _write(path)
    ds = FeatureDataset(path, split="test", in_memory=in_memory)
    rows = [i for i, sp in enumerate(s) if sp == "test"]
    assert len(ds) == len(rows) and ds.keys["row"].tolist() == rows
    assert set(ds.keys["split"]) == {"test"}
    for i, r in enumerate(rows):
        x, label, idx = ds[i]
        np.testing.assert_array_equal(x.numpy(), v[r])
        assert float(label) == y[r] and idx == i and ds.keys.loc[i, "video_id"] == k[r][2]
    assert len(FeatureDataset(path, split=["train", "val"])) == 10 - len(rows)
    with pytest.raises(ValueError, match="unknown split"):
        FeatureDataset(path, split="validation")


def test_dataloader_batches(tmp_path):
    path = tmp_path / "features.h5"
    v, y, _, _ = _write(path)
    for in_memory in (True, False):
        ds = FeatureDataset(path, split="train", in_memory=in_memory)
        xs, ls, idx = next(iter(DataLoader(ds, batch_size=8, shuffle=False)))
        assert xs.shape == (4, T, N, C) and xs.dtype == torch.float32
        assert ls.dtype == torch.float32 and ls.shape == (4,)
        rows = ds.keys["row"].to_numpy()[idx.numpy()]
        np.testing.assert_array_equal(xs.numpy(), v[rows])
        np.testing.assert_array_equal(ls.numpy(), y[rows])
        ds.close()


def test_exception_inside_writer_leaves_nothing(tmp_path):
    path = tmp_path / "features.h5"
    v, y, k, s = _data()
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureCacheWriter(path, T, N, C, encoder_sha256=ENC, params={}) as w:
            w.add(v[:4], y[:4], k[:4], s[:4])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_previous_file(tmp_path):
    path = tmp_path / "features.h5"
    _write(path)
    before = path.read_bytes()
    v, y, k, s = _data()
    with pytest.raises(ValueError, match="duplicate window key"):
        with FeatureCacheWriter(path, T, N, C, encoder_sha256=OTHER, params={}) as w:
            w.add(v[:2], y[:2], k[:2], s[:2])
            w.add(v[:1], y[:1], k[:1], s[:1])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["features.h5"]


def test_writer_refuses_bad_input_and_incomplete_cache(tmp_path):
    path = tmp_path / "features.h5"
    v, y, k, s = _data()
    with pytest.raises(ValueError, match="64-digit hex"):
        FeatureCacheWriter(path, T, N, C, encoder_sha256="model.pt", params={})
    with pytest.raises(ValueError, match="shape"):
        with FeatureCacheWriter(path, T, N, C, encoder_sha256=ENC, params={}) as w:
            w.add(v[:2, :, :, :2], y[:2], k[:2], s[:2])
    with pytest.raises(ValueError, match="NaN"):
        with FeatureCacheWriter(path, T, N, C, encoder_sha256=ENC, params={}) as w:
            bad = v[:2].copy()
            bad[0, 0, 0, 0] = np.nan
            w.add(bad, y[:2], k[:2], s[:2])
    with pytest.raises(ValueError, match="expected 10 windows, got 4"):
        with FeatureCacheWriter(path, T, N, C, encoder_sha256=ENC, params={}, expected_windows=10) as w:
            w.add(v[:4], y[:4], k[:4], s[:4])
    assert list(tmp_path.iterdir()) == []


def test_stale_cache_refused(tmp_path):
    path = tmp_path / "features.h5"
    _write(path)
    with pytest.raises(FeatureCacheError, match="stale cache: built from encoder") as exc:
        FeatureDataset(path, expect_encoder_sha256=OTHER)
    assert str(path) in str(exc.value) and OTHER in str(exc.value) and "re-run cache_features" in str(exc.value)
    ckpt = tmp_path / "encoder.pt"
    ckpt.write_bytes(b"encoder-a")
    assert sha256_file(ckpt) == ENC
    assert len(FeatureDataset(path, expect_encoder_sha256=sha256_file(ckpt))) == 10


def test_missing_and_truncated_files_refused(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FeatureCacheError, match="file not found") as exc:
        open_cache(missing)
    assert str(missing) in str(exc.value)

    path = tmp_path / "features.h5"
    _write(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 100):
        broken = tmp_path / f"cut{cut}.h5"
        broken.write_bytes(data[:cut])
        with pytest.raises(FeatureCacheError, match="corrupt|truncated") as exc:
            FeatureDataset(broken)
        assert str(broken) in str(exc.value)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(FeatureCacheError, match="not a readable HDF5 file"):
        open_cache(text)


def test_modified_content_refused_by_checksum(tmp_path):
    path = tmp_path / "features.h5"
    _write(path)
    with h5py.File(path, "r+") as f:
        f["vertices"][3, 0, 0, 0] += 1.0
    with pytest.raises(FeatureCacheError, match="content checksum mismatch"):
        FeatureDataset(path)
    with pytest.raises(FeatureCacheError, match="content checksum mismatch"):
        FeatureDataset(path, in_memory=False)
    assert len(FeatureDataset(path, verify=False)) == 10  # explicit opt-out

    _write(path)
    with h5py.File(path, "r+") as f:
        f["label"][0] = 1  # a flipped label is content too
    with pytest.raises(FeatureCacheError, match="content checksum mismatch"):
        open_cache(path)


def test_schema_version_missing_datasets_and_lengths_refused(tmp_path):
    path = tmp_path / "features.h5"
    _write(path)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(FeatureCacheError, match=f"schema version {SCHEMA_VERSION + 1}, this code reads"):
        open_cache(path)

    _write(path)
    with h5py.File(path, "r+") as f:
        del f["split"]
    with pytest.raises(FeatureCacheError, match=r"missing dataset\(s\) \['split'\]"):
        open_cache(path)

    _write(path)
    with h5py.File(path, "r+") as f:
        f["label"].resize(9, axis=0)
    with pytest.raises(FeatureCacheError, match="inconsistent lengths: n_windows attribute 10.*label=9"):
        open_cache(path)


def test_empty_cache_is_valid(tmp_path):
    path = tmp_path / "empty.h5"
    with FeatureCacheWriter(path, T, N, C, encoder_sha256=ENC, params={}):
        pass
    ds = FeatureDataset(path, expect_encoder_sha256=ENC)
    assert len(ds) == 0 and ds.info.n_windows == 0
