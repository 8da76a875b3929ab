"""Four manipulation families applied to a real clip (uint8 [F,S,S,3] + landmarks [F,5,2]).

Each function returns ``(frames uint8 [F,S,S,3], masks uint8 [F,S,S])``; the mask is the per-pixel
blend weight times 255 (0 = untouched pixel). Masks are defined in the face's canonical frame
(similarity from :data:`pipeline.ingest.demo.faces.TEMPLATE` to the frame's landmarks), so they follow
the head.

- ``faceswap``: the donor's face, aligned frame by frame by a similarity on the 5 landmarks,
  colour-matched (per-channel mean/std over the clip), blended in a feathered ellipse; constant
  blend parameters.
- ``sbi``: self-blended (Shiohara & Yamasaki 2022): a colour/sharpness-changed, slightly shifted and
  scaled copy of the face blended into itself in a deformed, feathered hull; every parameter is drawn
  ONCE per clip, so it does not flicker.
- ``mouth_reenact``: the mouth region of the same face warped open and closed along a speech-like
  path (lips stretched vertically, the gap between them darkened).
- ``flicker_swap``: a face swap whose blend weight, mask size/offset, feather and colour match are
  redrawn for EVERY frame (a temporally inconsistent fake).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .faces import TEMPLATE, invert_affine, sample, similarity, transform_grid

__all__ = ["METHODS", "faceswap", "sbi", "mouth_reenact", "flicker_swap", "manipulate", "canonical_maps"]

FACE_C = np.array([56.0, 72.0])      # face ellipse centre in template coordinates
FACE_AX = np.array([33.0, 42.0])     # its semi-axes
MOUTH_C = np.array([56.1, 92.3])


def canonical_maps(landmarks: np.ndarray) -> np.ndarray:
    """[F,2,3] similarity maps template -> frame for per-frame landmarks [F,5,2]."""
    return np.stack([similarity(TEMPLATE, lm) for lm in landmarks])


def _canon_coords(lm: np.ndarray, size: int) -> torch.Tensor:
    """Template coordinates of every output pixel, [F,S,S,2]."""
    return transform_grid(invert_affine(canonical_maps(lm)), size)


def _ellipse(cc: torch.Tensor, center, axes, feather, harm=None) -> torch.Tensor:
    """Soft ellipse mask in [0,1] over canonical coords ``cc`` [...,2]. ``harm``: (k, amp, phase) arrays
    deforming the radius by 1 + sum amp*cos(k*theta + phase). Parameters may be per-frame [F]."""
    def pf(v):
        v = torch.as_tensor(np.asarray(v, np.float64))
        while v.dim() < cc.dim() - 1:
            v = v[..., None]
        return v
    center = torch.as_tensor(np.asarray(center, np.float64))
    axes = torch.as_tensor(np.asarray(axes, np.float64))
    if center.dim() == 2:  # per frame [F,2]
        center = center[:, None, None, :]
        axes = axes[:, None, None, :]
    d = (cc - center) / axes
    r = torch.sqrt((d ** 2).sum(-1))
    if harm is not None:
        th = torch.atan2(d[..., 1], d[..., 0])
        k, amp, ph = harm
        scale = 1 + sum(a * torch.cos(kk * th + p) for kk, a, p in zip(k, amp, ph))
        r = r / scale
    f = pf(feather)
    x = ((1 - r) / f).clamp(0, 1)
    return (x * x * (3 - 2 * x)).float()  # smoothstep


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of [F,S,S,C] float."""
    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[-1]
    y = x.permute(0, 3, 1, 2).reshape(-1, 1, *x.shape[1:3])
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(x.shape[0], c, *x.shape[1:3]).permute(0, 2, 3, 1)


def _colour_match(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor, per_frame: bool) -> torch.Tensor:
    """Shift/scale ``src`` channels to the mean/std of ``dst`` inside weights ``w`` [F,S,S]."""
    dims = (1, 2) if per_frame else (0, 1, 2)
    ww = w[..., None]
    tot = ww.sum(dims, keepdim=True).clamp(min=1e-6)
    ms, md = (src * ww).sum(dims, keepdim=True) / tot, (dst * ww).sum(dims, keepdim=True) / tot
    ss = (((src - ms) ** 2 * ww).sum(dims, keepdim=True) / tot).sqrt().clamp(min=1.0)
    sd = (((dst - md) ** 2 * ww).sum(dims, keepdim=True) / tot).sqrt().clamp(min=1.0)
    return (src - ms) / ss * sd + md


def _finish(out: torch.Tensor, mask: torch.Tensor):
    return (out.round().clamp(0, 255).to(torch.uint8).numpy(),
            (mask * 255).round().clamp(0, 255).to(torch.uint8).numpy())


def _compose(a, b):
    """2x3 affine(s) a after b (either may be a single map or a stack [F,2,3])."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lin = a[..., :2] @ b[..., :2]
    t = a[..., :2] @ b[..., 2:3] + a[..., 2:3]
    return np.concatenate([lin, t], -1)


def _warp_donor(target_lm, donor_frames, donor_lm, size):
    n = len(target_lm)
    di = np.arange(n) % len(donor_frames)
    # output pixel -> template (inverse target map) -> donor pixel (donor map)
    a = _compose(canonical_maps(donor_lm[di]), invert_affine(canonical_maps(target_lm)))
    src = torch.from_numpy(np.ascontiguousarray(donor_frames[di])).float()
    return sample(src, transform_grid(a, size), padding="border")


def faceswap(frames, lm, rng, donor_frames, donor_lm):
    n, size = frames.shape[:2]
    tgt = torch.from_numpy(frames).float()
    don = _warp_donor(lm, donor_frames, donor_lm, size)
    cc = _canon_coords(lm, size)
    scale = rng.uniform(0.9, 1.02)
    mask = _ellipse(cc, FACE_C + [0, rng.uniform(-2, 2)], FACE_AX * scale, rng.uniform(0.15, 0.3))
    core = _ellipse(cc, FACE_C, FACE_AX * scale * 0.85, 0.05)
    don = _colour_match(don, tgt, core, per_frame=False)
    out = mask[..., None] * don + (1 - mask[..., None]) * tgt
    return _finish(out, mask)


def flicker_swap(frames, lm, rng, donor_frames, donor_lm):
    n, size = frames.shape[:2]
    tgt = torch.from_numpy(frames).float()
    don = _warp_donor(lm, donor_frames, donor_lm, size)
    cc = _canon_coords(lm, size)
    scale = rng.uniform(0.82, 1.08, n)
    centers = FACE_C[None] + rng.uniform(-4, 4, (n, 2))
    axes = FACE_AX[None] * scale[:, None]
    feather = rng.uniform(0.06, 0.4, n)
    alpha = torch.as_tensor(rng.uniform(0.45, 1.0, n), dtype=torch.float32)[:, None, None]
    mask = _ellipse(cc, centers, axes, feather) * alpha
    core = _ellipse(cc, FACE_C, FACE_AX * 0.8, 0.05)
    matched = _colour_match(don, tgt, core, per_frame=True)
    strength = torch.as_tensor(rng.uniform(0.0, 1.0, n), dtype=torch.float32)[:, None, None, None]
    don = strength * matched + (1 - strength) * don
    don = don + torch.as_tensor(rng.uniform(-10, 10, (n, 1, 1, 1)), dtype=torch.float32)
    out = mask[..., None] * don + (1 - mask[..., None]) * tgt
    return _finish(out, mask)


def sbi(frames, lm, rng, donor_frames=None, donor_lm=None):
    n, size = frames.shape[:2]
    tgt = torch.from_numpy(frames).float()
    # source: colour + sharpness change, drawn once
    gain = torch.as_tensor(rng.uniform(0.88, 1.12, 3), dtype=torch.float32)
    bias = torch.as_tensor(rng.uniform(-14, 14, 3), dtype=torch.float32)
    src = (tgt - 128) * gain + 128 + bias
    if rng.random() < 0.5:
        src = _blur(src, rng.uniform(0.7, 1.4))
    else:
        src = src + rng.uniform(0.5, 1.2) * (src - _blur(src, 1.0))
    # slight warp in the face frame: scale and shift about the face centre, drawn once
    s = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-2.5, 2.5, 2)
    m = canonical_maps(lm)
    mi = invert_affine(m)
    warp = np.array([[1 / s, 0, FACE_C[0] * (1 - 1 / s) + shift[0]], [0, 1 / s, FACE_C[1] * (1 - 1 / s) + shift[1]]])
    a = _compose(m, _compose(warp, mi))
    src = sample(src, transform_grid(a, size), padding="border")
    # deformed hull mask, drawn once
    cc = _canon_coords(lm, size)
    k = np.array([2, 3, 4])
    harm = (k, rng.uniform(0, 0.08, 3), rng.uniform(0, 2 * np.pi, 3))
    mask = _ellipse(cc, FACE_C + rng.uniform(-2, 2, 2), FACE_AX * rng.uniform(0.8, 1.0, 2),
                    rng.uniform(0.15, 0.4), harm)
    mask = mask * float(rng.uniform(0.55, 1.0))
    out = mask[..., None] * src + (1 - mask[..., None]) * tgt
    return _finish(out, mask)


def mouth_reenact(frames, lm, rng, donor_frames=None, donor_lm=None, fps: float = 25.0):
    """Warp the mouth of the same face open/closed along a speech-like path."""
    n, size = frames.shape[:2]
    tgt = torch.from_numpy(frames).float()
    t = np.arange(n) / fps
    f1, f2 = rng.uniform(2.0, 3.5), rng.uniform(0.3, 0.8)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * f2 * t + rng.uniform(0, 2 * np.pi))
    opening = np.clip(np.sin(2 * np.pi * f1 * t + rng.uniform(0, 2 * np.pi)), 0, None) * env
    amp = rng.uniform(0.35, 0.6)
    st = 1 + amp * opening                                    # vertical stretch factor per frame
    cc = _canon_coords(lm, size)
    mc = MOUTH_C + [0, rng.uniform(-1, 1)]
    w = _ellipse(cc, mc, [21.0, 15.0], 0.6)                   # warp weight (soft bump)
    stt = torch.as_tensor(st, dtype=torch.float64)[:, None, None]
    # template-space source coordinates: stretch vertically about the mouth line, lower lip moves more
    dy = cc[..., 1] - mc[1]
    lower = torch.where(dy > 0, torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    src_c = cc.clone()
    src_c[..., 1] = mc[1] + dy * (1 - w.double() * lower * (1 - 1 / stt))
    m = canonical_maps(lm)
    src_px = torch.einsum("fij,fhwj->fhwi", torch.as_tensor(m[:, :, :2]), src_c) + \
        torch.as_tensor(m[:, None, None, :, 2])
    out = sample(tgt, src_px, padding="border")
    # darken the gap between the lips in proportion to the opening
    gap = _ellipse(cc, mc + [0, 1.5], [12.0, 2.0 + 5.0 * amp], 0.7)
    dark = 1 - 0.6 * gap * torch.as_tensor(opening, dtype=torch.float32)[:, None, None]
    out = out * dark[..., None]
    mask = w * (torch.as_tensor(opening, dtype=torch.float32)[:, None, None] > 0.02).float()
    mask = torch.maximum(mask, w * 0.2)  # the region is a manipulation target in every frame
    return _finish(out, mask)


METHODS = {"faceswap": faceswap, "sbi": sbi, "mouth_reenact": mouth_reenact, "flicker_swap": flicker_swap}
NEEDS_DONOR = {"faceswap", "flicker_swap"}


def manipulate(method: str, frames, lm, rng, donor_frames=None, donor_lm=None, fps: float = 25.0):
    if method not in METHODS:
        raise ValueError(f"unknown manipulation {method!r}; known: {sorted(METHODS)}")
    if method in NEEDS_DONOR and donor_frames is None:
        raise ValueError(f"{method} needs a donor clip")
    if method == "mouth_reenact":
        return mouth_reenact(frames, lm, rng, fps=fps)
    return METHODS[method](frames, lm, rng, donor_frames, donor_lm)
