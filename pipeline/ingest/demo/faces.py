"""Face boxes and 5-point landmarks with MTCNN, plus the geometry shared by motion and manipulations.

Landmark order is MTCNN's: left eye, right eye, nose, left mouth corner, right mouth corner (image
coordinates, x right, y down). ``TEMPLATE`` is the usual 112x112 five-point template; a similarity
transform from it to a face's landmarks gives that face's "canonical" frame, in which the face
masks of :mod:`pipeline.ingest.demo.manipulations` are defined (so they follow the head).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TEMPLATE", "get_mtcnn", "detect", "similarity", "invert_affine", "apply_affine",
           "sample", "pixel_grid"]

TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


@lru_cache(maxsize=1)
def get_mtcnn():
    from facenet_pytorch import MTCNN  # deferred on purpose: only face detection needs it (heavy import)
    return MTCNN(keep_all=True, device="cpu")


def detect(images: np.ndarray | Sequence[np.ndarray], batch: int = 16, prefer_center: bool = False):
    """Run MTCNN on same-sized RGB uint8 images [N,H,W,3] (batched).

    Returns ``boxes`` [N,4] xyxy, ``landmarks`` [N,5,2], ``probs`` [N] as float64 arrays; NaN where no
    face was found. Of several faces the largest is kept (or, with ``prefer_center``, the one whose
    centre is closest to the image centre, weighted by size).
    """
    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = imgs[None]
    n, h, w = imgs.shape[:3]
    boxes = np.full((n, 4), np.nan)
    lms = np.full((n, 5, 2), np.nan)
    probs = np.full((n,), np.nan)
    m = get_mtcnn()
    with torch.no_grad():
        for s in range(0, n, batch):
            chunk = np.ascontiguousarray(imgs[s:s + batch])
            b, p, l = m.detect(chunk, landmarks=True)
            for i in range(len(chunk)):
                if b[i] is None or len(b[i]) == 0:
                    continue
                bi = np.asarray(b[i], dtype=np.float64).reshape(-1, 4)
                li = np.asarray(l[i], dtype=np.float64).reshape(-1, 5, 2)
                pi = np.asarray(p[i], dtype=np.float64).reshape(-1)
                size = (bi[:, 2] - bi[:, 0]) * (bi[:, 3] - bi[:, 1])
                if prefer_center:
                    c = np.stack([(bi[:, 0] + bi[:, 2]) / 2 - w / 2, (bi[:, 1] + bi[:, 3]) / 2 - h / 2], 1)
                    score = np.sqrt(size) - 1.5 * np.hypot(c[:, 0], c[:, 1])
                else:
                    score = size
                k = int(np.argmax(score))
                boxes[s + i], lms[s + i], probs[s + i] = bi[k], li[k], pi[k]
    return boxes, lms, probs


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, translation) mapping ``src`` points onto ``dst`` (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var = (s0 ** 2).sum() / len(src)
    scale = (sig * d).sum() / max(var, 1e-12)
    t = md - scale * r @ ms
    return np.concatenate([scale * r, t[:, None]], 1)


def invert_affine(a: np.ndarray) -> np.ndarray:
    """Inverse of one 2x3 affine or of a stack [...,2,3]."""
    a = np.asarray(a, np.float64)
    lin = a[..., :2]
    inv = np.linalg.inv(lin)
    t = -(inv @ a[..., 2:3])
    return np.concatenate([inv, t], -1)


def apply_affine(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply 2x3 affine(s) ``a`` [...,2,3] to points ``pts`` [...,P,2]."""
    a = np.asarray(a, np.float64)
    return np.einsum("...ij,...pj->...pi", a[..., :2], pts) + a[..., None, :, 2]


def pixel_grid(size: int) -> torch.Tensor:
    """[S,S,2] float64 (x, y) pixel-centre coordinates of an SxS image."""
    r = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx, yy], -1)


def transform_grid(a: np.ndarray, size: int) -> torch.Tensor:
    """Per-frame 2x3 maps ``a`` [F,2,3] applied to the output pixel grid -> [F,S,S,2] float64."""
    g = pixel_grid(size)
    at = torch.as_tensor(np.asarray(a, np.float64))
    return torch.einsum("fij,hwj->fhwi", at[:, :, :2], g) + at[:, None, None, :, 2]


def sample(images: torch.Tensor, coords: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Bilinear sampling. ``images`` float [N,H,W,C] (N == F or 1), ``coords`` [F,Ho,Wo,2] pixel (x, y).

    Returns float32 [F,Ho,Wo,C].
    """
    n, h, w, c = images.shape
    f = coords.shape[0]
    x = images.permute(0, 3, 1, 2).float()
    if n == 1 and f > 1:
        x = x.expand(f, -1, -1, -1)
    gx = (2 * coords[..., 0] + 1) / w - 1
    gy = (2 * coords[..., 1] + 1) / h - 1
    grid = torch.stack([gx, gy], -1).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.permute(0, 2, 3, 1)
