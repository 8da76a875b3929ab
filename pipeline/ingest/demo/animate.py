"""A moving face from two front photos of one person (neutral, smiling) and the neutral photo's template.

A clip is rendered frame by frame as a face morph along the template's points, so the face moves the way
faces move rather than as a photo panned:

- **expression**: the points go from the neutral to the smiling positions (or back, or up and down) along
  a smooth ramp ``s(t)``; both photos are warped to the frame's points and cross-dissolved with weight
  ``s(t)`` (the classic landmark morph). The smiling photo has no template: its points are the neutral
  ones moved by block matching (normalised cross-correlation) after a similarity alignment on the eyes
  and nose, smoothed by a thin-plate spline (:func:`smile_points`).
- **head motion**: the points are rotated in 3D (yaw, pitch, roll along smooth random paths, a few degrees)
  about the face centre with a depth prior (an ellipsoid with the nose forward) and projected
  orthographically; points on the image border stay put, so the shoulders and background do not turn.
- **camera**: a slow zoom, pan and roll of the whole frame, plus sensor noise (as for the other stills).

The warps are thin-plate splines (:class:`TPS`) from the frame's points back to
each photo's points, evaluated on a coarse grid and upsampled (the map is smooth), so each output pixel is
sampled once from an original photo. The MTCNN five landmarks of the neutral photo follow the forward map,
giving each frame's landmarks for the manipulations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import lu_factor, lu_solve

from .faces import apply_affine, detect, invert_affine, sample, similarity
from .motion import FACE_FRACTION, Clip, smooth_path

__all__ = ["FacePair", "TPS", "prepare_pair", "smile_points", "depth_prior", "rotate_points", "expression_ramp",
           "camera_maps", "animate_pair"]

_GRID = 24          # the thin-plate maps are evaluated on a _GRID x _GRID grid, then upsampled
_BORDER = 12        # fixed points per image side


@dataclass
class FacePair:
    neutral: np.ndarray       # uint8 [H,W,3]
    smiling: np.ndarray       # uint8 [H,W,3] (its own framing)
    pts: np.ndarray           # [P,2] template points on the neutral photo
    pts_smile: np.ndarray     # [P,2] the same points, smiling, in the NEUTRAL photo's frame
    to_smiling: np.ndarray    # [2,3] neutral frame -> smiling photo pixels
    lm5: np.ndarray           # [5,2] MTCNN landmarks of the neutral photo
    lm5_smile: np.ndarray     # [5,2] MTCNN landmarks of the smiling photo, in the neutral photo's frame
    box: np.ndarray           # [4] MTCNN box of the neutral photo
    depth: np.ndarray         # [P] depth prior of the points (pixels, towards the camera)
    anchors: np.ndarray       # [A,2] fixed points (image border)


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)
    return 0.5 * d2 * np.log(np.maximum(d2, 1e-12))          # r^2 log r = d2 log(d2) / 2


class TPS:
    """Thin-plate splines through fixed centres ``src`` [n,2]: ``fit(dst)`` returns f with f(src_i) ~= dst_i
    (exactly when ``smoothing`` is 0), f(q) = sum_i w_i U(|q - src_i|) + A [1, q], U(r) = r^2 log r.

    The system matrix depends on the centres only, so it is factorised once and each new ``dst`` costs one
    pair of triangular solves.
    """

    def __init__(self, src: np.ndarray, smoothing: np.ndarray | float = 0.0):
        self.src = np.asarray(src, np.float64)
        n = len(self.src)
        m = np.zeros((n + 3, n + 3))
        m[:n, :n] = _tps_kernel(self.src, self.src) + np.diag(np.broadcast_to(np.asarray(smoothing, np.float64), (n,)))
        m[:n, n] = m[n, :n] = 1.0
        m[:n, n + 1:] = self.src
        m[n + 1:, :n] = self.src.T
        self._lu = lu_factor(m)

    def fit(self, dst: np.ndarray):
        n = len(self.src)
        rhs = np.zeros((n + 3, dst.shape[1]))
        rhs[:n] = dst
        coef = lu_solve(self._lu, rhs)
        return lambda q: (_tps_kernel(np.asarray(q, np.float64), self.src) @ coef[:n] + coef[n]
                          + np.asarray(q, np.float64) @ coef[n + 1:])


def _gray(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def smile_points(neutral: np.ndarray, smiling_aligned: np.ndarray, pts: np.ndarray, radius: int = 7,
                 search: int = 10, smoothing: float = 100.0, known: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> np.ndarray:
    """Where the neutral photo's points ``pts`` [P,2] lie in ``smiling_aligned`` (the same framing).

    For each point, the offset in ``[-search, search]^2`` whose (2 radius + 1)^2 patch of the smiling image
    has the highest normalised cross-correlation with the neutral patch; the offsets are then fitted by a
    smoothed thin-plate spline weighted towards textured patches, so flat skin follows its neighbours.
    ``known``: points (neutral, smiling) whose correspondence is known (the MTCNN landmarks of both photos),
    held almost exactly by the fit.
    """
    a, b = _gray(neutral), _gray(smiling_aligned)
    h, w = a.shape
    pad = radius + search + 1
    a = np.pad(a, pad, mode="edge")
    b = np.pad(b, pad, mode="edge")
    c = np.round(pts).astype(int) + pad
    c[:, 0] = np.clip(c[:, 0], pad, w + pad - 1)
    c[:, 1] = np.clip(c[:, 1], pad, h + pad - 1)
    r = np.arange(-radius, radius + 1)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    pa = a[c[:, 1, None, None] + yy, c[:, 0, None, None] + xx].reshape(len(c), -1)
    pa = pa - pa.mean(1, keepdims=True)
    sa = np.sqrt((pa ** 2).sum(1)) + 1e-6
    best = np.full(len(c), -np.inf)
    off = np.zeros((len(c), 2))
    for dy in range(-search, search + 1):
        for dx in range(-search, search + 1):
            pb = b[c[:, 1, None, None] + yy + dy, c[:, 0, None, None] + xx + dx].reshape(len(c), -1)
            pb = pb - pb.mean(1, keepdims=True)
            ncc = (pa * pb).sum(1) / (sa * (np.sqrt((pb ** 2).sum(1)) + 1e-6))
            better = ncc > best
            best[better] = ncc[better]
            off[better] = (dx, dy)
    texture = sa / np.sqrt(pa.shape[1])
    conf = np.clip(best, 0, 1) * np.clip(texture / 8.0, 0.05, 1.0)
    centres, weights = pts, smoothing / np.maximum(conf, 0.05)
    if known is not None:
        centres = np.concatenate([pts, known[0]])
        weights = np.concatenate([weights, np.full(len(known[0]), 1e-2)])
        off = np.concatenate([off, known[1] - known[0]])
    return pts + TPS(centres, weights).fit(off)(pts)


def depth_prior(pts: np.ndarray, lm5: np.ndarray) -> np.ndarray:
    """A depth per point: an ellipsoid over the face's extent with the nose tip pushed forward (pixels)."""
    c = pts.mean(0)
    ax = np.maximum(2.2 * pts.std(0), 1.0)
    d2 = (((pts - c) / ax) ** 2).sum(1)
    z = 0.6 * ax[0] * np.sqrt(np.clip(1 - d2, 0, 1))
    nose = lm5[2]
    z += 0.25 * ax[0] * np.exp(-((pts - nose) ** 2).sum(1) / (2 * (0.12 * ax[0]) ** 2))
    return z


def rotate_points(pts: np.ndarray, depth: np.ndarray, yaw: float, pitch: float, roll: float,
                  center: np.ndarray) -> np.ndarray:
    """Rotate points with depth about ``center`` by yaw (y axis), pitch (x axis), roll (z axis), radians,
    and project orthographically (x right, y down, z towards the camera)."""
    p = np.concatenate([pts - center, depth[:, None]], 1)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    q = p @ (rz @ rx @ ry).T
    return q[:, :2] + center


def expression_ramp(n: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """The smile weight ``s(t)`` in [0, 1] over ``n`` frames: a smile that appears, fades, or comes and goes,
    each change a smoothstep of 0.25-0.6 s."""
    t = np.arange(n) / fps
    dur = n / fps

    def step(t0: float, length: float) -> np.ndarray:
        x = np.clip((t - t0) / length, 0, 1)
        return x * x * (3 - 2 * x)

    kind = int(rng.integers(3))
    l1, l2 = rng.uniform(0.25, 0.6, 2)
    peak = rng.uniform(0.7, 1.0)
    if kind == 0:   # onset
        return peak * step(rng.uniform(0.05, 0.5) * dur, l1)
    if kind == 1:   # offset
        return peak * (1 - step(rng.uniform(0.05, 0.5) * dur, l1))
    t0 = rng.uniform(0.0, 0.3) * dur
    t1 = t0 + l1 + rng.uniform(0.05, 0.3) * dur
    return peak * step(t0, l1) * (1 - step(t1, l2))


def camera_maps(n: int, size: int, center: np.ndarray, face_side: float, fps: float,
                rng: np.random.Generator) -> np.ndarray:
    """[n,2,3] maps from output pixels (u, v) to photo pixels: a face of ``face_side`` photo pixels at
    ``center`` fills ``FACE_FRACTION`` of the output, with a slow zoom, pan and roll along smooth paths."""
    drift = np.linspace(0, 1, n) * rng.uniform(-0.06, 0.06)
    zoom = (1.0 + drift + 0.03 * smooth_path(rng, n, fps)) * (FACE_FRACTION * size / face_side)
    tx = 0.04 * face_side * smooth_path(rng, n, fps)
    ty = 0.03 * face_side * smooth_path(rng, n, fps)
    rot = np.deg2rad(2.0) * smooth_path(rng, n, fps, 0.05, 0.3)
    c_out = (size - 1) / 2
    cos, sin = np.cos(rot) / zoom, np.sin(rot) / zoom
    a = np.zeros((n, 2, 3))
    a[:, 0, 0], a[:, 0, 1] = cos, -sin
    a[:, 1, 0], a[:, 1, 1] = sin, cos
    a[:, 0, 2] = center[0] + tx - (cos - sin) * c_out
    a[:, 1, 2] = center[1] + ty - (sin + cos) * c_out
    return a


def _border(h: int, w: int, k: int = _BORDER) -> np.ndarray:
    xs, ys = np.linspace(0, w - 1, k), np.linspace(0, h - 1, k)
    pts = [(x, 0) for x in xs] + [(x, h - 1) for x in xs] + [(0, y) for y in ys[1:-1]] + [(w - 1, y) for y in ys[1:-1]]
    return np.array(pts, np.float64)


def _unique(pts: np.ndarray) -> np.ndarray:
    """The template's points without repeats (a template may place two points on one pixel)."""
    _, keep = np.unique(np.round(pts, 1), axis=0, return_index=True)
    return pts[np.sort(keep)]


def prepare_pair(neutral: np.ndarray, smiling: np.ndarray, pts: np.ndarray) -> FacePair:
    """Detect both faces (MTCNN), align the smiling photo to the neutral one on the eyes and nose, and find
    the smiling positions of the template points."""
    if neutral.shape != smiling.shape:
        raise ValueError(f"the two photos differ in size: {neutral.shape} and {smiling.shape}")
    boxes, lm, _ = detect(np.stack([neutral, smiling]))
    if np.isnan(lm).any() or np.isnan(boxes).any():
        raise ValueError("no face found in the neutral or smiling photo")
    lm_n, lm_s = lm[0], lm[1]
    pts = _unique(pts)
    to_smiling = similarity(lm_n[:3], lm_s[:3])             # neutral frame -> smiling photo (eyes + nose)
    h, w = neutral.shape[:2]
    g = np.stack(np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)), -1)
    coords = torch.from_numpy(apply_affine(to_smiling, g.reshape(1, -1, 2)).reshape(1, h, w, 2))
    aligned = sample(torch.from_numpy(np.array(smiling, dtype=np.float32)).float()[None], coords).round().clamp(0, 255).byte().numpy()[0]
    lm_s_here = apply_affine(invert_affine(to_smiling), lm_s[None])[0]
    pts_smile = smile_points(neutral, aligned, pts, known=(lm_n, lm_s_here))
    return FacePair(neutral, smiling, pts, pts_smile, to_smiling, lm_n, lm_s_here, boxes[0], depth_prior(pts, lm_n),
                    _border(h, w))


def _upsample(coarse: np.ndarray, size: int) -> torch.Tensor:
    """[G,G,2] map on the coarse grid -> [size,size,2] (bilinear; the grid's corners are the output's)."""
    t = torch.from_numpy(coarse).permute(2, 0, 1)[None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True)[0].permute(1, 2, 0)


def animate_pair(pair: FacePair, frames: int, size: int, fps: float, rng: np.random.Generator,
                 max_yaw: float = 8.0, max_pitch: float = 5.0, max_roll: float = 4.0,
                 noise: float = 1.5) -> Clip:
    """Render one clip (``frames`` x ``size`` x ``size``) of ``pair``: expression, head motion and camera."""
    n = frames
    s = expression_ramp(n, fps, rng)
    yaw = np.deg2rad(max_yaw) * smooth_path(rng, n, fps, 0.1, 0.6)
    pitch = np.deg2rad(max_pitch) * smooth_path(rng, n, fps, 0.1, 0.6)
    roll = np.deg2rad(max_roll) * smooth_path(rng, n, fps, 0.05, 0.4)
    box = pair.box
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    face_side = float(max(box[2] - box[0], box[3] - box[1]))
    cam = camera_maps(n, size, center, face_side, fps, rng)
    head_c = pair.pts.mean(0)
    u = np.linspace(0, size - 1, _GRID)
    grid = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)               # output pixels (x, y)
    src = np.concatenate([pair.pts, pair.anchors])
    motion = TPS(src)                                                  # neutral photo -> moved face
    to_smile = TPS(src).fit(np.concatenate([pair.pts_smile, pair.anchors]))   # neutral -> smiling, aligned
    photos = torch.from_numpy(np.stack([pair.neutral, pair.smiling])).permute(0, 3, 1, 2).float()
    h, w = pair.neutral.shape[:2]
    out = np.empty((n, size, size, 3), np.uint8)
    lms = np.empty((n, 5, 2))
    for t in range(n):
        expr = (1 - s[t]) * pair.pts + s[t] * pair.pts_smile
        dst = np.concatenate([rotate_points(expr, pair.depth, yaw[t], pitch[t], roll[t], head_c), pair.anchors])
        q = apply_affine(cam[t], grid[None])[0]                         # photo pixels after the motion
        back_n = TPS(dst).fit(src)(q)                                  # ... and before it, on the neutral photo
        back_s = apply_affine(pair.to_smiling, to_smile(back_n)[None])[0]
        coords = torch.stack([_upsample(back_n.reshape(_GRID, _GRID, 2), size),
                              _upsample(back_s.reshape(_GRID, _GRID, 2), size)])
        g = torch.stack([(2 * coords[..., 0] + 1) / w - 1, (2 * coords[..., 1] + 1) / h - 1], -1).float()
        both = F.grid_sample(photos, g, mode="bilinear", padding_mode="border", align_corners=False)
        fr = ((1 - s[t]) * both[0] + s[t] * both[1]).permute(1, 2, 0)
        if noise > 0:
            fr = fr + torch.from_numpy(rng.normal(0, noise, fr.shape).astype(np.float32))
        out[t] = fr.round().clamp(0, 255).to(torch.uint8).numpy()
        lms[t] = apply_affine(invert_affine(cam[t]), motion.fit(dst)(pair.lm5)[None])[0]
    return Clip(out, lms, {"smile": s.round(3).tolist()})
