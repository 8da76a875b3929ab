"""Face detection, tracking and cropping (used by the ``crop`` stage and reusable by a ``detect`` command).

* :class:`FaceDetector` – facenet-pytorch MTCNN run on *batches* of frames (one call for ``detect_batch`` frames)
  downscaled so the longest side is ``detect_max_side`` (``min_face_size`` counts in those downscaled pixels,
  so the smallest face found in a 1920-px frame at max side 320 is 6 x min_face_size source px); with ``detect_every = k`` only every k-th frame is
  detected (the tracker interpolates the others). Boxes/landmarks come back in source-frame pixels.
* :func:`track_main_face` – follows one face through the video by IoU: starts from the most confident / largest
  face of the first frames with a face, links each next detection by IoU, bridges gaps of at most ``max_gap``
  detector frames by linear interpolation; a longer gap ends the segment and a new one starts later.
* :func:`smooth_boxes` – centred moving average of the boxes (per segment).
* :func:`crop_window`, :func:`square_crop`, :func:`landmarks_to_crop` – square crop around the box centre with a
  margin (padded with zeros at the borders), resized to ``size x size``; the same mapping for landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "Detections", "Segment", "FaceDetector", "box_iou", "track_main_face", "smooth_boxes",
    "crop_window", "square_crop", "landmarks_to_crop", "downscale",
]


# --------------------------------------------------------------------------- data
@dataclass
class Detections:
    """Per-frame detector output in source-frame pixels.

    ``boxes[i]`` float32 [k, 4] xyxy, ``probs[i]`` [k], ``landmarks[i]`` [k, 5, 2]; ``ran[i]`` is False for frames
    the detector skipped (``detect_every`` > 1) – those have k = 0 and are filled by the tracker.
    """

    boxes: list = field(default_factory=list)
    probs: list = field(default_factory=list)
    landmarks: list = field(default_factory=list)
    ran: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.boxes)

    def append(self, boxes=None, probs=None, landmarks=None, ran: bool = True) -> None:
        if boxes is None or len(boxes) == 0:
            self.boxes.append(np.zeros((0, 4), np.float32))
            self.probs.append(np.zeros((0,), np.float32))
            self.landmarks.append(np.zeros((0, 5, 2), np.float32))
        else:
            b = np.asarray(boxes, np.float32).reshape(-1, 4)
            self.boxes.append(b)
            self.probs.append(np.ones(len(b), np.float32) if probs is None
                              else np.asarray(probs, np.float32).reshape(-1))
            if landmarks is None:  # box corners/centre as placeholders
                cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
                lm = np.stack([np.stack([cx, cy], -1)] * 5, 1)
            else:
                lm = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
            self.landmarks.append(lm.astype(np.float32))
        self.ran.append(bool(ran))

    def extend(self, other: "Detections") -> None:
        self.boxes += other.boxes
        self.probs += other.probs
        self.landmarks += other.landmarks
        self.ran += other.ran

    @property
    def frames_with_face(self) -> int:
        return int(sum(len(b) > 0 for b in self.boxes))

    @classmethod
    def from_list(cls, items: Iterable) -> "Detections":
        """From hand-made data: per frame ``None`` (not run), an array of boxes [k,4], or (boxes, probs[, lms])."""
        d = cls()
        for it in items:
            if it is None:
                d.append(ran=False)
            elif isinstance(it, tuple):
                d.append(*it)
            else:
                d.append(it)
        return d


@dataclass
class Segment:
    """A continuous piece of the main-face track: frames ``start .. start+len-1``."""

    start: int
    boxes: np.ndarray          # float32 [L, 4] source xyxy (raw, interpolated over gaps)
    landmarks: np.ndarray      # float32 [L, 5, 2] source pixels
    probs: np.ndarray          # float32 [L] (0 on interpolated frames)
    detected: np.ndarray       # bool [L] True where a detection was linked

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def frames(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self), dtype=np.int64)


# --------------------------------------------------------------------------- detection
def downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Resize so the longest side is at most ``max_side``; returns (frame, scale = new/old)."""
    h, w = frame.shape[:2]
    s = max_side / max(h, w)
    if s >= 1.0:
        return frame, 1.0
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    small = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.BILINEAR))
    return small, nw / w


def _resolve_device(device: Optional[str]) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class FaceDetector:
    """Batched MTCNN. ``detect(frames)`` returns :class:`Detections` for a list of frames of one video."""

    def __init__(self, max_side: int = 320, batch: int = 16, every: int = 1, min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), device: Optional[str] = "cpu"):
        from facenet_pytorch import MTCNN  # deferred on purpose: only face detection needs it (heavy import)
        self.max_side, self.batch, self.every = int(max_side), int(batch), int(every)
        self.min_face_size = int(min_face_size)
        self.device = _resolve_device(device)
        self.mtcnn = MTCNN(keep_all=True, select_largest=False, post_process=False,
                           min_face_size=self.min_face_size, thresholds=list(thresholds), device=self.device)

    @classmethod
    def from_params(cls, crop, device: Optional[str] = "cpu") -> "FaceDetector":
        return cls(max_side=crop.detect_max_side, batch=crop.detect_batch, every=crop.detect_every,
                   min_face_size=crop.min_face_size, thresholds=crop.thresholds, device=device)

    def _run(self, smalls: list[np.ndarray], scale: float):
        """One MTCNN call on equally sized frames; returns per-frame (boxes, probs, lms) in source pixels."""
        # min_face_size applies to the frame MTCNN sees (the downscaled one), as in MTCNN itself: scaling it
        # down with the frame would rebuild the full-resolution image pyramid and cancel the speed-up.
        # Faces smaller than min_face_size / scale source pixels are therefore not detected.
        self.mtcnn.min_face_size = self.min_face_size
        boxes, probs, lms = self.mtcnn.detect(np.stack(smalls), landmarks=True)
        out = []
        for b, p, l in zip(boxes, probs, lms):
            if b is None or len(b) == 0:
                out.append((None, None, None))
                continue
            b = np.asarray(b, np.float32) / scale
            l = np.asarray(l, np.float32) / scale
            out.append((b, np.asarray(p, np.float32), l))
        return out

    def detect(self, frames: Sequence[np.ndarray], offset: int = 0) -> Detections:
        """Detect faces in ``frames`` (RGB uint8, one video). ``offset`` is the index of ``frames[0]`` in the
        video (so that ``detect_every`` picks the same frames whatever the chunking)."""
        det = Detections()
        todo = [i for i in range(len(frames)) if (offset + i) % self.every == 0]
        results: dict[int, tuple] = {}
        # group by frame size (MTCNN batches need equal sizes; a video normally has one size)
        for start in range(0, len(todo), self.batch):
            idx = todo[start:start + self.batch]
            groups: dict[tuple, list[int]] = {}
            smalls: dict[int, tuple[np.ndarray, float]] = {}
            for i in idx:
                smalls[i] = downscale(frames[i], self.max_side)
                groups.setdefault(smalls[i][0].shape, []).append(i)
            for _, members in groups.items():
                res = self._run([smalls[i][0] for i in members], smalls[members[0]][1])
                for i, r in zip(members, res):
                    results[i] = r
        for i in range(len(frames)):
            if i in results:
                det.append(*results[i])
            else:
                det.append(ran=False)
        return det

    def detect_stream(self, frames: Iterable[np.ndarray], on_frame=None) -> Detections:
        """Detect over an iterable of frames, holding at most ``batch * every`` frames at a time.

        With ``every`` > 1 the detector also runs on the video's last frame, so that the track reaches the
        end of the video (frames after the last detector frame could not be interpolated, and a 32-frame
        video would lose its only 32-frame window).
        """
        det = Detections()
        buf: list[np.ndarray] = []
        chunk = self.batch * self.every
        n = 0
        last: Optional[np.ndarray] = None
        for f in frames:
            buf.append(f)
            last = f
            if on_frame is not None:
                on_frame(f)
            if len(buf) == chunk:
                det.extend(self.detect(buf, offset=n))
                n += len(buf)
                buf = []
        if buf:
            det.extend(self.detect(buf, offset=n))
        if last is not None and not det.ran[-1]:
            tail = self.detect([last])
            det.boxes[-1], det.probs[-1], det.landmarks[-1], det.ran[-1] = (
                tail.boxes[0], tail.probs[0], tail.landmarks[0], True)
        return det


# --------------------------------------------------------------------------- tracking
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes ``a`` [n,4] and ``b`` [m,4] (xyxy) -> [n, m]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _candidates(det: Detections, i: int, min_confidence: float):
    b, p, l = det.boxes[i], det.probs[i], det.landmarks[i]
    keep = p >= min_confidence
    return b[keep], p[keep], l[keep]


def _interp(x0: np.ndarray, x1: np.ndarray, n: int) -> np.ndarray:
    """n values strictly between x0 and x1 (linear)."""
    t = (np.arange(1, n + 1, dtype=np.float32) / (n + 1)).reshape((-1,) + (1,) * x0.ndim)
    return (x0[None] * (1 - t) + x1[None] * t).astype(np.float32)


def _make_segment(matches: list[tuple[int, np.ndarray, float, np.ndarray]]) -> Segment:
    """From linked detections [(frame, box, prob, lms)] build a dense segment, interpolating between them."""
    start, end = matches[0][0], matches[-1][0]
    L = end - start + 1
    boxes = np.zeros((L, 4), np.float32)
    lms = np.zeros((L, 5, 2), np.float32)
    probs = np.zeros((L,), np.float32)
    detected = np.zeros((L,), bool)
    for (f0, b0, p0, l0), nxt in zip(matches, matches[1:] + [None]):
        j = f0 - start
        boxes[j], lms[j], probs[j], detected[j] = b0, l0, p0, True
        if nxt is not None and nxt[0] - f0 > 1:
            n = nxt[0] - f0 - 1
            boxes[j + 1:j + 1 + n] = _interp(b0, nxt[1], n)
            lms[j + 1:j + 1 + n] = _interp(l0, nxt[3], n)
    return Segment(start, boxes, lms, probs, detected)


def track_main_face(detections, iou_threshold: float = 0.3, max_gap: int = 5, min_confidence: float = 0.0,
                    start_frames: int = 10) -> list[Segment]:
    """Follow the main face through a video; returns its track as a list of :class:`Segment`.

    ``detections``: :class:`Detections` or a list accepted by :meth:`Detections.from_list`.
    The track starts on the face with the largest ``prob * area`` among the first ``start_frames`` detector
    frames that hold a face (confidence >= ``min_confidence``); each later detector frame links the candidate
    with the highest IoU (>= ``iou_threshold``) against the last linked box. Up to ``max_gap`` consecutive
    detector frames without a match are bridged by interpolation (frames skipped by ``detect_every`` are
    not counted); after a longer gap the segment ends and a new one starts at the next frame with a face
    (largest face again, preferring one overlapping the previous track).
    """
    det = detections if isinstance(detections, Detections) else Detections.from_list(detections)
    n = len(det)
    segments: list[Segment] = []
    i = 0
    last_box: Optional[np.ndarray] = None
    while i < n:
        # --- find a start: best face among the first `start_frames` detector frames with a face
        first = None
        window: list[int] = []
        for j in range(i, n):
            if not det.ran[j]:
                continue
            if len(_candidates(det, j, min_confidence)[0]):
                if first is None:
                    first = j
                window.append(j)
                if len(window) >= start_frames:
                    break
            elif first is not None and len(window) >= 1 and j - first > start_frames * 3:
                break
        if first is None:
            break
        best = None  # (score, frame, k)
        for j in window:
            b, p, _ = _candidates(det, j, min_confidence)
            score = p * _area(b)
            if last_box is not None:  # after a break prefer the face we were following
                score = score * (1.0 + box_iou(b, last_box[None])[:, 0])
            k = int(np.argmax(score))
            if best is None or score[k] > best[0] * 1.0001:
                best = (float(score[k]), j, k)
        # link backwards from the best frame to `first`, then forwards
        _, j0, k0 = best
        b, p, l = _candidates(det, j0, min_confidence)
        anchor = (j0, b[k0], float(p[k0]), l[k0])
        back = [anchor]
        cur = b[k0]
        gap = 0
        for j in range(j0 - 1, i - 1, -1):
            if not det.ran[j]:
                continue
            bb, pp, ll = _candidates(det, j, min_confidence)
            if len(bb):
                ious = box_iou(bb, cur[None])[:, 0]
                k = int(np.argmax(ious))
                if ious[k] >= iou_threshold:
                    back.append((j, bb[k], float(pp[k]), ll[k]))
                    cur, gap = bb[k], 0
                    continue
            gap += 1
            if gap > max_gap:
                break
        matches = back[::-1]
        cur = b[k0]
        gap = 0
        j = j0 + 1
        while j < n:
            if det.ran[j]:
                bb, pp, ll = _candidates(det, j, min_confidence)
                linked = False
                if len(bb):
                    ious = box_iou(bb, cur[None])[:, 0]
                    k = int(np.argmax(ious))
                    if ious[k] >= iou_threshold:
                        matches.append((j, bb[k], float(pp[k]), ll[k]))
                        cur, gap, linked = bb[k], 0, True
                if not linked:
                    gap += 1
                    if gap > max_gap:
                        break
            j += 1
        seg = _make_segment(matches)
        segments.append(seg)
        last_box = matches[-1][1]
        i = matches[-1][0] + 1
    return segments


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``boxes`` [L, 4] over ``window`` frames (shrinks at the ends)."""
    boxes = np.asarray(boxes, np.float32)
    L = len(boxes)
    half = max(0, int(window) // 2)
    if half == 0 or L < 2:
        return boxes.copy()
    c = np.concatenate([np.zeros((1, boxes.shape[1]), np.float64), np.cumsum(boxes, axis=0, dtype=np.float64)])
    idx = np.arange(L)
    lo = np.clip(idx - half, 0, L)
    hi = np.clip(idx + half + 1, 0, L)
    return ((c[hi] - c[lo]) / (hi - lo)[:, None]).astype(np.float32)


# --------------------------------------------------------------------------- cropping
def crop_window(box, margin: float) -> tuple[int, int, int]:
    """Integer square ``(x0, y0, side)`` around the centre of ``box`` (xyxy), side = max(w, h) * (1 + margin)."""
    x1, y1, x2, y2 = [float(v) for v in box]
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    side_i = max(1, int(round(side)))
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return int(round(cx - side_i / 2.0)), int(round(cy - side_i / 2.0)), side_i


def square_crop(frame: np.ndarray, box, margin: float, size: int, resample: int = Image.BILINEAR,
                window: Optional[tuple[int, int, int]] = None) -> np.ndarray:
    """Square crop of ``frame`` ([H,W,C] or [H,W]) around ``box`` with ``margin``, zero-padded outside the
    frame, resized to ``size x size``. ``window`` overrides the square from :func:`crop_window`."""
    x0, y0, side = window if window is not None else crop_window(box, margin)
    h, w = frame.shape[:2]
    out = np.zeros((side, side) + frame.shape[2:], dtype=frame.dtype)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    if side != size:
        out = np.asarray(Image.fromarray(out).resize((size, size), resample))
    return out


def landmarks_to_crop(points, box, margin: float, size: int,
                      window: Optional[tuple[int, int, int]] = None) -> np.ndarray:
    """Map source-frame points [..., 2] into the pixel coordinates of :func:`square_crop`'s output."""
    x0, y0, side = window if window is not None else crop_window(box, margin)
    pts = np.asarray(points, np.float32)
    s = size / float(side)
    return ((pts - np.array([x0, y0], np.float32)) * s).astype(np.float32)
