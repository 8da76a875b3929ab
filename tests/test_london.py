"""The vendored London face set and the face morph that animates it (pipeline/ingest/demo/london.py, animate.py)."""
from __future__ import annotations

import csv
import hashlib
import shutil

import numpy as np
import pytest
import torch

from pipeline.ingest.demo import london
from pipeline.ingest.demo.animate import (TPS, animate_pair, depth_prior, expression_ramp, prepare_pair,
                                          rotate_points, smile_points)
from pipeline.ingest.demo.sources import SourceError


# ----------------------------------------------------------------------------- the vendored files
def test_every_vendored_file_is_listed_and_verified():
    root = london.LONDON_DIR
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    listed = sorted(ln.split(maxsplit=1)[1] for ln in (root / "SHA256SUMS").read_text().splitlines())
    assert [f for f in files if f not in ("SHA256SUMS", "README.md")] == listed
    assert hashlib.sha256((root / "SHA256SUMS").read_bytes()).hexdigest() == london.SUMS_SHA256
    ps = london.people()
    assert len(ps) == 102
    london.verify([f for p in ps for f in (p.neutral, p.smiling, p.template)])


def test_attribution_is_kept_beside_the_files_and_in_the_readme():
    text = (london.LONDON_DIR / "README.md").read_text()
    assert "DeBruine, L., & Jones, B. (2017). Face Research Lab London Set" in text and "CC BY 4.0" in text
    readme = (london.LONDON_DIR.parents[3] / "README.md").read_text()
    assert "https://doi.org/10.6084/m9.figshare.5047666.v5" in readme


def test_people_table_matches_the_csv():
    with open(london.LONDON_DIR / "people.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ps = {p.face_id: p for p in london.people()}
    assert len(rows) == len(ps)
    for r in rows:
        p = ps[r["face_id"]]
        assert (p.gender, p.ethnicity) == (r["face_gender"], r["face_eth"])
        assert p.age == (None if r["face_age"] == "NA" else int(r["face_age"]))
        assert p.identity == "london_" + r["face_id"]
    assert [p.face_id for p in london.people(ids=["010", "002"])] == ["002", "010"]
    with pytest.raises(SourceError, match="unknown London face ids.*999"):
        london.people(ids=["999"])


def test_a_changed_file_or_list_is_refused(tmp_path):
    root = tmp_path / "london"
    shutil.copytree(london.LONDON_DIR, root)
    jpg = root / "neutral" / "001.jpg"
    data = bytearray(jpg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    jpg.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"neutral/001\.jpg: SHA-256 .* does not match"):
        london.verify([jpg], root)
    london.verify([root / "neutral" / "002.jpg"], root)          # the others still pass
    sums = root / "SHA256SUMS"
    text = sums.read_text()
    sums.write_text(("1" if text[0] == "0" else "0") + text[1:])   # the list itself edited to match a change
    with pytest.raises(SourceError, match="SHA256SUMS: SHA-256 .* does not match the pinned"):
        london.verify([root / "neutral" / "002.jpg"], root)


def test_template_reading():
    pts = london.read_template(london.LONDON_DIR / "landmarks" / "neutral" / "001.tem")
    assert pts.shape == (189, 2)
    np.testing.assert_allclose(pts[0], [188.33, 210.67])
    np.testing.assert_allclose(pts[1], [259.33, 208.00])
    assert (pts >= 0).all() and (pts < 450).all()


# ----------------------------------------------------------------------------- the morph's parts
def test_tps_interpolates_its_points_and_reproduces_affine_maps():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (20, 2))
    dst = src + rng.normal(0, 3, src.shape)
    f = TPS(src).fit(dst)
    np.testing.assert_allclose(f(src), dst, atol=1e-8)
    a = np.array([[1.1, -0.2], [0.3, 0.9]])
    b = np.array([5.0, -7.0])
    g = TPS(src).fit(src @ a.T + b)                    # an affine map has zero bending: reproduced everywhere
    q = rng.uniform(-50, 150, (50, 2))
    np.testing.assert_allclose(g(q), q @ a.T + b, atol=1e-7)


def test_rotate_points_by_hand():
    c = np.array([10.0, 20.0])
    p = np.array([[10.0, 20.0], [13.0, 20.0], [10.0, 24.0]])
    z = np.array([5.0, 0.0, 0.0])
    np.testing.assert_allclose(rotate_points(p, z, 0, 0, 0, c), p)
    th = np.deg2rad(10)
    # yaw: the point in front of the centre (depth 5) moves right by 5 sin(th); one on the x axis shrinks by cos
    r = rotate_points(p, z, th, 0, 0, c)
    np.testing.assert_allclose(r[0], [10 + 5 * np.sin(th), 20])
    np.testing.assert_allclose(r[1], [10 + 3 * np.cos(th), 20])
    # roll: a plain 2D rotation about the centre (y down: positive roll turns +x towards +y)
    r = rotate_points(p, z, 0, 0, th, c)
    np.testing.assert_allclose(r[1], [10 + 3 * np.cos(th), 20 + 3 * np.sin(th)])
    # pitch: the point in front moves up (towards -y) by 5 sin(th) for a positive pitch
    r = rotate_points(p, z, 0, th, 0, c)
    np.testing.assert_allclose(r[0], [10, 20 - 5 * np.sin(th)])


def test_depth_prior_puts_the_nose_in_front():
    pts = london.read_template(london.LONDON_DIR / "landmarks" / "neutral" / "001.tem")
    lm5 = np.array([[180.0, 210], [260, 210], [220, 250], [190, 290], [250, 290]])
    z = depth_prior(pts, lm5)
    nose = np.argmin(((pts - lm5[2]) ** 2).sum(1))
    assert z[nose] > np.percentile(z, 90) and z.min() >= 0


def test_smile_points_recover_a_known_shift():
    rng = np.random.default_rng(1)
    img = (rng.uniform(0, 255, (120, 120, 1)) * np.ones((1, 1, 3))).astype(np.float64)
    img = torch.nn.functional.avg_pool2d(torch.from_numpy(img).permute(2, 0, 1)[None], 3, 1, 1)[0].permute(1, 2, 0).numpy()
    shifted = np.roll(img, shift=(-2, 3), axis=(0, 1))           # content moves 3 px right, 2 px up
    pts = rng.uniform(30, 90, (25, 2))
    got = smile_points(img.astype(np.uint8), shifted.astype(np.uint8), pts)
    np.testing.assert_allclose(got - pts, np.tile([3.0, -2.0], (25, 1)), atol=0.5)


def test_expression_ramp_is_smooth_and_bounded():
    for seed in range(12):
        s = expression_ramp(32, 25.0, np.random.default_rng(seed))
        assert s.shape == (32,) and s.min() >= 0 and s.max() <= 1
        assert np.abs(np.diff(s)).max() < 0.25                   # no jump: at least ~0.25 s per change


# ----------------------------------------------------------------------------- a rendered clip
@pytest.fixture(scope="module")
def pair():
    from PIL import Image
    p = london.people(ids=["010"])[0]
    n = np.asarray(Image.open(p.neutral).convert("RGB"))
    s = np.asarray(Image.open(p.smiling).convert("RGB"))
    return prepare_pair(n, s, london.read_template(p.template))


def test_smiling_points_follow_the_mouth_corners(pair):
    # MTCNN's five landmarks on the smiling photo (mapped into the neutral frame) are held by the fit, and the
    # template points next to each mouth corner move the same way as the corner
    for k in (3, 4):
        move = pair.lm5_smile[k] - pair.lm5[k]
        assert np.hypot(*move) > 2                                 # the photo pair does smile
        near = np.argsort(((pair.pts - pair.lm5[k]) ** 2).sum(1))[:3]
        d = (pair.pts_smile[near] - pair.pts[near]).mean(0)
        cos = (d @ move) / (np.linalg.norm(d) * np.linalg.norm(move) + 1e-9)
        assert cos > 0.5, (k, move, d)


def test_animated_clip_moves_like_a_face_and_its_landmarks_follow(pair):
    from pipeline.ingest.demo.faces import detect
    torch.set_num_threads(1)
    clip = animate_pair(pair, 16, 128, 25.0, np.random.default_rng(3))
    assert clip.frames.shape == (16, 128, 128, 3) and clip.frames.dtype == np.uint8
    assert clip.landmarks.shape == (16, 5, 2)
    _, found, _ = detect(clip.frames)
    assert not np.isnan(found).any()
    err = np.sqrt(((found - clip.landmarks) ** 2).sum(-1))
    assert np.median(err) < 3.0, err                             # MTCNN agrees with the warped landmarks
    # not a still photo panned: the face changes shape relative to the eyes (expression, head turn)
    eyes = clip.landmarks[:, 1, 0] - clip.landmarks[:, 0, 0]
    shape = (clip.landmarks[:, 4, 0] - clip.landmarks[:, 3, 0]) / eyes, (clip.landmarks[:, 2, 0] - clip.landmarks[:, 0, 0]) / eyes
    assert np.ptp(shape[0]) > 0.02 or np.ptp(shape[1]) > 0.02
    assert (np.abs(np.diff(clip.frames.astype(np.int16), axis=0)).mean((1, 2, 3)) > 0.5).all()


def test_animation_is_deterministic(pair):
    a = animate_pair(pair, 6, 64, 25.0, np.random.default_rng(7))
    b = animate_pair(pair, 6, 64, 25.0, np.random.default_rng(7))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.landmarks, b.landmarks)
