"""Training-time augmentation of crop windows, and self-blended pseudo-fakes made on the fly.

Every parameter is drawn ONCE per window (never per frame), so augmentation adds no flicker, which
would otherwise become a cue of its own. Draws come from ``numpy.random.default_rng([seed, epoch, i])``:
a run repeats exactly for a seed, whatever the number of DataLoader workers.

- :func:`augment_clip`: colour (brightness, contrast, saturation, per-channel gain), crop jitter (a
  shift and zoom of up to ~6 %), Gaussian blur, and JPEG re-compression (PIL), each with its own
  probability. Real and fake windows are augmented alike.
- Self-blended images (SBI, Shiohara & Yamasaki, CVPR 2022): with probability ``pseudo_fake_prob`` a
  REAL training window is replaced by a copy of itself whose face region was blended with a colour- and
  sharpness-changed, slightly warped version of itself (:func:`pipeline.ingest.demo.manipulations.sbi`,
  the demo's own SBI family, on the window's stored landmarks), and labelled fake. The model then sees
  blending artefacts on every training identity, many more fakes than the dataset holds.
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.ingest.demo.manipulations import _blur, sbi

__all__ = ["augment_clip", "AugmentedClips", "PSEUDO_FAKE_METHOD"]

PSEUDO_FAKE_METHOD = "sbi_pseudo"


def _jpeg(frames: np.ndarray, quality: int) -> np.ndarray:
    out = np.empty_like(frames)
    for k, f in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=int(quality))
        out[k] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def augment_clip(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One window uint8 ``[F, S, S, 3]`` -> an augmented copy (same shape and dtype)."""
    x = torch.from_numpy(clip.astype(np.float32))
    if rng.random() < 0.8:                                              # colour
        gray = x.mean(-1, keepdim=True)
        sat = rng.uniform(0.7, 1.3)
        x = gray + (x - gray) * sat
        x = (x - x.mean()) * rng.uniform(0.75, 1.25) + x.mean() + rng.uniform(-20, 20)
        x = x * torch.as_tensor(rng.uniform(0.92, 1.08, 3), dtype=torch.float32)
    if rng.random() < 0.5:                                              # crop jitter: shift + zoom
        s = clip.shape[1]
        z = rng.uniform(1.0, 1.12)
        dy, dx = rng.uniform(-0.06, 0.06, 2) * s
        theta = torch.tensor([[1 / z, 0, 2 * dx / s], [0, 1 / z, 2 * dy / s]], dtype=torch.float32)
        grid = torch.nn.functional.affine_grid(theta[None].expand(len(x), 2, 3), (len(x), 3, s, s),
                                               align_corners=False)
        x = torch.nn.functional.grid_sample(x.permute(0, 3, 1, 2), grid, padding_mode="border",
                                            align_corners=False).permute(0, 2, 3, 1)
    if rng.random() < 0.3:                                              # blur
        x = _blur(x, rng.uniform(0.4, 1.2))
    out = x.round().clamp(0, 255).to(torch.uint8).numpy()
    if rng.random() < 0.3:                                              # re-compression
        out = _jpeg(out, int(rng.integers(40, 95)))
    return out


class AugmentedClips(Dataset):
    """A training view of a :class:`pipeline.ingest.clips.ClipDataset` (opened ``with_landmarks=True``).

    ``pseudo_fake_prob``: share of real windows turned into self-blended pseudo-fakes (label 1, method
    ``sbi_pseudo``); ``augment``: apply :func:`augment_clip` to every window. :meth:`set_epoch` changes the
    draws from one epoch to the next."""

    def __init__(self, clips: Dataset, seed: int, pseudo_fake_prob: float = 0.0, augment: bool = False):
        self.clips, self.seed = clips, int(seed)
        self.pseudo_fake_prob, self.augment = float(pseudo_fake_prob), bool(augment)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def index(self):
        """The wrapped dataset's window table (pseudo-fakes are labelled per item, not here)."""
        return self.clips.index

    @property
    def labels(self):
        return self.clips.labels

    def __getitem__(self, i: int) -> dict:
        item = dict(self.clips[i])
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        clip = item["clip"].numpy()
        lm: Optional[torch.Tensor] = item.pop("landmarks", None)
        if item["label"] == 0 and self.pseudo_fake_prob > 0 and rng.random() < self.pseudo_fake_prob:
            if lm is None:
                raise ValueError(f"pseudo-fakes need the crops' landmarks ({item['dataset']}/{item['method']}/"
                                 f"{item['video_id']} has none)")
            clip = sbi(clip, lm.numpy().astype(np.float64), rng)[0]
            item.update(label=1, method=PSEUDO_FAKE_METHOD)
        if self.augment:
            clip = augment_clip(clip, rng)
        item["clip"] = torch.from_numpy(np.ascontiguousarray(clip))
        return item
