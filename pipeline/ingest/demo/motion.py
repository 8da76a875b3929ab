"""Real clips from real media: a still photo animated by a smooth camera path, a real video cut into windows.

Both return ``Clip`` objects: uint8 frames [F,S,S,3] and per-frame landmarks [F,5,2] in output pixels.
Stills: the face is detected once on a canvas around it and the landmarks follow the (known)
camera warp analytically. Videos: the face is tracked with MTCNN on a subsampled pass, a square crop
follows the smoothed track, and landmarks are detected again on every output frame (then smoothed
over time, gaps filled by interpolation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter1d

from .faces import apply_affine, detect, get_mtcnn, invert_affine, sample, transform_grid

__all__ = ["Clip", "StillFace", "still_faces", "still_clip", "VideoTrack", "load_video", "video_clips",
           "smooth_path"]

FACE_FRACTION = 0.58  # face box side / frame side


@dataclass
class Clip:
    frames: np.ndarray          # uint8 [F,S,S,3]
    landmarks: np.ndarray       # float64 [F,5,2]
    meta: dict = field(default_factory=dict)


@dataclass
class StillFace:
    canvas: np.ndarray          # uint8 [2S,2S,3], face centred, face box ~ FACE_FRACTION*S
    landmarks: np.ndarray       # [5,2] in canvas pixels


def _load_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def still_faces(path, size: int) -> list[StillFace]:
    """Every face MTCNN finds (prob >= 0.95, not tiny) in a photo, each as a canvas of side 2*size."""
    img = _load_rgb(path)
    b, p, l = get_mtcnn().detect(Image.fromarray(img), landmarks=True)
    out: list[StillFace] = []
    if b is None:
        return out
    b = np.asarray(b, np.float64).reshape(-1, 4)
    p = np.asarray(p, np.float64).reshape(-1)
    order = np.argsort(b[:, 0])  # left to right: a stable face index
    big = max(max(bb[2] - bb[0], bb[3] - bb[1]) for bb in b)
    for k in order:
        bb = b[k]
        fs = max(bb[2] - bb[0], bb[3] - bb[1])
        if p[k] < 0.95 or fs < 0.35 * big or fs < 40:
            continue
        out.append(_canvas(img, bb, size))
    return out


def _canvas(img: np.ndarray, box: np.ndarray, size: int) -> StillFace:
    fs = max(box[2] - box[0], box[3] - box[1])
    scale = FACE_FRACTION * size / fs
    h, w = img.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    im = np.asarray(Image.fromarray(img).resize((nw, nh), Image.LANCZOS))
    cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
    pad = 2 * size
    im = np.pad(im, ((pad, pad), (pad, pad), (0, 0)), mode="reflect" if min(nh, nw) > pad else "edge")
    x0, y0 = int(round(cx + pad - size)), int(round(cy + pad - size))
    canvas = np.ascontiguousarray(im[y0:y0 + 2 * size, x0:x0 + 2 * size])
    _, lm, _ = detect(canvas[None], prefer_center=True)
    if np.isnan(lm).any():
        raise ValueError("face lost after resampling")
    return StillFace(canvas, lm[0])


def smooth_path(rng: np.random.Generator, n: int, fps: float, fmin=0.05, fmax=0.45, k=3) -> np.ndarray:
    """A smooth random path in [-1, 1] (sum of ``k`` low-frequency sinusoids with random phases)."""
    t = np.arange(n) / fps
    fr = rng.uniform(fmin, fmax, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    amp = rng.uniform(0.3, 1.0, k)
    x = (amp[:, None] * np.sin(2 * np.pi * fr[:, None] * t + ph[:, None])).sum(0)
    return x / amp.sum()


def still_clip(face: StillFace, frames: int, size: int, fps: float, rng: np.random.Generator,
               noise: float = 1.5) -> Clip:
    """Animate a still: slow zoom, pan and a small roll along smooth random paths, plus sensor noise."""
    n = frames
    drift = np.linspace(0, 1, n) * rng.uniform(-0.08, 0.08)
    zoom = 1.06 + drift + 0.04 * smooth_path(rng, n, fps)
    tx = 0.05 * size * smooth_path(rng, n, fps)
    ty = 0.04 * size * smooth_path(rng, n, fps)
    rot = np.deg2rad(3.0) * smooth_path(rng, n, fps, 0.05, 0.3)
    # output (u,v) -> canvas (x,y):  p = C + R(rot) (q - c_out) / zoom + t
    c_out = (size - 1) / 2
    c_can = size - 0.5
    cos, sin = np.cos(rot) / zoom, np.sin(rot) / zoom
    a = np.zeros((n, 2, 3))
    a[:, 0, 0], a[:, 0, 1] = cos, -sin
    a[:, 1, 0], a[:, 1, 1] = sin, cos
    a[:, 0, 2] = c_can + tx - (cos - sin) * c_out
    a[:, 1, 2] = c_can + ty - (sin + cos) * c_out
    img = torch.from_numpy(face.canvas).float()[None]
    out = np.empty((n, size, size, 3), np.uint8)
    for s in range(0, n, 16):
        fr = sample(img, transform_grid(a[s:s + 16], size), padding="reflection")
        if noise > 0:
            fr = fr + torch.from_numpy(rng.normal(0, noise, fr.shape).astype(np.float32))
        out[s:s + 16] = fr.round().clamp(0, 255).to(torch.uint8).numpy()
    lm = apply_affine(invert_affine(a), np.broadcast_to(face.landmarks, (n, 5, 2)))
    return Clip(out, lm)


# ----------------------------------------------------------------------------- videos
@dataclass
class VideoTrack:
    frames: np.ndarray      # uint8 [N,h,w,3] decoded at a reduced scale
    centers: np.ndarray     # [N,2] smoothed face centres (reduced-scale pixels), NaN outside the face run
    side: float             # square crop side (reduced-scale pixels)
    start: int              # first and one-past-last frame of the longest run with a face
    stop: int
    fps: float


def load_video(path, size: int, step: int = 4) -> VideoTrack | None:
    """Decode a video at a scale where the face crop is about ``size`` px, and track the face."""
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        w0, h0 = st.codec_context.width, st.codec_context.height
        fps = float(st.average_rate or 25)
        raw = [f for f in c.decode(video=0)]
        # quick probe at <= 320 px to learn the face size
        probe_scale = min(1.0, 320 / max(w0, h0))
        pw, ph = int(round(w0 * probe_scale / 2) * 2), int(round(h0 * probe_scale / 2) * 2)
        probe = np.stack([f.to_ndarray(format="rgb24", width=pw, height=ph) for f in raw[::step]])
    boxes, _, probs = detect(probe)
    ok = ~np.isnan(probs) & (np.nan_to_num(probs) > 0.9)
    if ok.sum() < 2:
        return None
    fs_probe = np.median(np.maximum(boxes[ok, 2] - boxes[ok, 0], boxes[ok, 3] - boxes[ok, 1]))
    side0 = fs_probe / probe_scale / FACE_FRACTION      # crop side in original pixels
    side0 = min(side0, min(w0, h0))
    scale = min(1.0, 1.15 * size / side0)
    w, h = int(round(w0 * scale / 2) * 2), int(round(h0 * scale / 2) * 2)
    frames = np.stack([f.to_ndarray(format="rgb24", width=w, height=h) for f in raw])
    del raw
    n = len(frames)
    idx = np.arange(0, n, step)[:len(probe)]
    # longest run of probe detections (gaps of one probe allowed)
    good = idx[ok]
    runs, cur = [], [good[0]]
    for g in good[1:]:
        if g - cur[-1] <= 2 * step:
            cur.append(g)
        else:
            runs.append(cur)
            cur = [g]
    runs.append(cur)
    run = max(runs, key=len)
    start, stop = run[0], min(n, run[-1] + 1)
    if run[-1] + step >= n:
        stop = n
    ctr = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2 + 0.04 * fs_probe], 1)
    ctr = ctr * (scale / probe_scale)
    sel = ok & (idx >= start) & (idx < stop)
    t = np.arange(n)
    centers = np.full((n, 2), np.nan)
    for j in range(2):
        centers[:, j] = np.interp(t, idx[sel], ctr[sel, j])
    centers[start:stop] = gaussian_filter1d(centers[start:stop], sigma=3.0, axis=0, mode="nearest")
    centers[:start] = np.nan
    centers[stop:] = np.nan
    side = side0 * scale
    # keep the crop inside the frame where possible
    centers[:, 0] = np.clip(centers[:, 0], side / 2, w - side / 2) if w >= side else w / 2
    centers[:, 1] = np.clip(centers[:, 1], side / 2, h - side / 2) if h >= side else h / 2
    return VideoTrack(frames, centers, side, int(start), int(stop), fps)


def video_clips(track: VideoTrack, n_clips: int, frames: int, size: int) -> list[Clip]:
    """``n_clips`` windows of ``frames`` frames spread over the face run (ping-pong if too short;
    a window overlapping the previous one by more than half is mirrored left-right)."""
    avail = track.stop - track.start
    if avail >= frames:
        starts = np.round(np.linspace(track.start, track.stop - frames, n_clips)).astype(int)
    else:
        starts = np.full(n_clips, track.start)
    clips = []
    prev = None
    for k, s0 in enumerate(starts):
        if avail >= frames:
            ids = np.arange(s0, s0 + frames)
        else:  # ping-pong over the available run
            period = max(1, 2 * avail - 2)
            ph = (np.arange(frames) + k * (avail // 2)) % period
            ids = track.start + np.where(ph < avail, ph, period - ph)
        flip = prev is not None and abs(s0 - prev) < frames // 2
        prev = s0
        half = track.side / 2
        a = np.zeros((frames, 2, 3))
        sc = track.side / size
        a[:, 0, 0] = a[:, 1, 1] = sc
        a[:, 0, 2] = track.centers[ids, 0] - half + 0.5 * sc - 0.5
        a[:, 1, 2] = track.centers[ids, 1] - half + 0.5 * sc - 0.5
        out = np.empty((frames, size, size, 3), np.uint8)
        for s in range(0, frames, 16):
            src = torch.from_numpy(track.frames[ids[s:s + 16]]).float()
            fr = sample(src, transform_grid(a[s:s + 16], size), padding="border")
            out[s:s + 16] = fr.round().clamp(0, 255).to(torch.uint8).numpy()
        if flip:
            out = np.ascontiguousarray(out[:, :, ::-1])
        clips.append(Clip(out, _video_landmarks(out), {"start": int(s0), "flip": bool(flip)}))
    return clips


def _video_landmarks(frames: np.ndarray) -> np.ndarray:
    _, lm, probs = detect(frames)
    n = len(frames)
    ok = ~np.isnan(probs)
    if ok.sum() == 0:
        raise ValueError("no face in the video window")
    t = np.arange(n)
    out = np.empty((n, 5, 2))
    for p in range(5):
        for j in range(2):
            out[:, p, j] = np.interp(t, t[ok], lm[ok, p, j])
    return gaussian_filter1d(out, sigma=1.0, axis=0, mode="nearest")
