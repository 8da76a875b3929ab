"""Forgery localisation (paper Sec. IV-F, Fig. 9): Grad-CAM heatmaps of the fake logit, and how well they
point at the manipulated region.

* :func:`gradcam_windows` – captum's ``LayerGradCam`` on ``encoder.feature_layer`` (the last backbone block)
  of the FULL model (encoder -> vertices -> relation learner -> fake logit), rectified, upsampled to the crop
  size and averaged per snippet (or per frame); each map is scaled to [0, 1] by its own maximum.
* :func:`gradcam_feature_maps` – the same from the backbone maps ``F_0`` that ``cache_features`` stores for these
  windows (:mod:`feature_cache.maps`): only the STA and the relation learner run, not the backbone.
* :func:`masked_fake_batches` – the windows explained: the fake ones of a crop split that carry masks.
* :func:`overlay` – a heatmap drawn over a crop (matplotlib's colour map, alpha blend) as a PIL image.
* :func:`snippet_masks` – per-frame manipulation masks -> one mask per snippet (union of its frames).
* :func:`pointing_game`, :func:`energy_ratio`, :func:`localisation_scores` – the metrics, and
  :func:`localisation_metrics` – them over the fake windows of a crop split that carry masks (``evaluate``).

Masks are the crop stage's ``masks`` (uint8 0/255, see docs/CONTRACTS.md): a pixel is MANIPULATED when its
value is ``> mask_threshold`` (default 127); a boolean mask is used as it is.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import matplotlib
import numpy as np
import torch
from PIL import Image

from graph_models import MRLModel
from pipeline.errors import InputRefused
from pipeline.ingest.clips import ClipDataset, clip_to_tensor

# captum is imported inside gradcam_windows on purpose (deferred optional import): only heatmaps need it.

__all__ = ["MASK_THRESHOLD", "gradcam_windows", "gradcam_feature_maps", "masked_fake_batches", "window_key", "overlay",
           "snippet_masks", "pointing_game", "energy_ratio", "localisation_scores", "localisation_metrics"]

MASK_THRESHOLD = 127


# --------------------------------------------------------------------------- Grad-CAM
def gradcam_windows(model, x: torch.Tensor, per: str = "snippet") -> torch.Tensor:
    """Grad-CAM of the fake logit for windows ``x`` float ``[B, 3, F, S, S]`` in [0, 1].

    ``model``: anything with ``.encoder`` (:class:`graph_models.Encoder`) and ``.relation``
    (:class:`graph_models.RelationLearner`), e.g. :class:`graph_models.MRLModel`; it is put in eval mode
    (no edge masking, no dropout). Returns ``heat [B, T, S, S]`` (``per="snippet"``: the backbone map of each
    snippet averaged over its temporal positions, then upsampled bilinearly) or ``[B, F, S, S]``
    (``per="frame"``: upsampled trilinearly to the D frames of each snippet), each map in [0, 1] (divided by
    its maximum; a map with no positive evidence is all zeros). CPU float32 tensor, detached.
    """
    from captum.attr import LayerGradCam  # deferred on purpose: only Grad-CAM needs it

    _check_per(per)
    enc, rel = model.encoder, model.relation
    enc.eval()
    rel.eval()
    B, _, F, S, _ = x.shape

    def fake_logit(inp: torch.Tensor) -> torch.Tensor:
        return rel(enc(inp).vertices).reshape(-1, 1)

    cam = LayerGradCam(fake_logit, enc.feature_layer)
    with torch.enable_grad():
        a = cam.attribute(x.float(), target=0, relu_attributions=True)  # [B*T, 1, d, h, w]
    return _heatmaps(a, B, F // enc.snippet_length, enc.snippet_length, S, per)


def gradcam_feature_maps(model, f0: torch.Tensor, size: int, per: str = "snippet") -> torch.Tensor:
    """:func:`gradcam_windows` from the backbone maps ``f0`` ``[B, T, C, d, h, w]`` of B windows (``F_0``, the
    output of ``encoder.feature_layer``, as ``cache_features`` stores them: :mod:`feature_cache.maps`) instead
    of the clips: the same captum ``LayerGradCam``, tapped where ``F_0`` enters the STA, so only the STA and the
    relation learner run (a masking experiment re-trains the relation learner, not the encoder). ``size``: the
    crop side S. Returns ``heat [B, T, S, S]`` (or ``[B, F, S, S]``), as :func:`gradcam_windows` does on the
    clips ``f0`` came from."""
    from captum.attr import LayerGradCam  # deferred on purpose: only Grad-CAM needs it

    _check_per(per)
    enc, rel = model.encoder, model.relation
    enc.eval()
    rel.eval()
    if f0.dim() != 6:
        raise ValueError(f"expected maps [B, T, C, d, h, w], got {tuple(f0.shape)}")
    B, T = f0.shape[:2]
    tap = torch.nn.Identity()   # the hook point: its output is F_0

    def fake_logit(maps: torch.Tensor) -> torch.Tensor:
        return rel(enc.from_feature_map(tap(maps), B).vertices).reshape(-1, 1)

    cam = LayerGradCam(fake_logit, tap)
    with torch.enable_grad():
        a = cam.attribute(f0.reshape(B * T, *f0.shape[2:]).float(), target=0, relu_attributions=True)
    return _heatmaps(a, B, T, enc.snippet_length, size, per)


def _check_per(per: str) -> None:
    if per not in ("snippet", "frame"):
        raise ValueError(f"per must be 'snippet' or 'frame', got {per!r}")


def _heatmaps(a: torch.Tensor, B: int, T: int, D: int, S: int, per: str) -> torch.Tensor:
    """captum's maps ``[B*T, 1, d, h, w]`` -> ``[B, T, S, S]`` (``per="snippet"``: averaged over the d temporal
    positions, upsampled bilinearly) or ``[B, T*D, S, S]`` (trilinearly), each divided by its maximum."""
    a = a.detach().float()
    if a.dim() != 5 or a.size(0) != B * T:
        raise RuntimeError(f"unexpected Grad-CAM shape {tuple(a.shape)} for {B} windows of {T} snippets")
    if per == "snippet":
        h = torch.nn.functional.interpolate(a.mean(2), size=(S, S), mode="bilinear", align_corners=False)
        h = h.reshape(B, T, S, S)
    else:
        h = torch.nn.functional.interpolate(a, size=(D, S, S), mode="trilinear", align_corners=False)
        h = h.reshape(B, T * D, S, S)
    h = h.clamp_min(0)
    mx = h.flatten(2).amax(-1)[..., None, None]
    h = torch.where(mx > 0, h / mx.clamp_min(1e-12), torch.zeros_like(h))
    return h.clamp(0, 1).cpu()


def overlay(frame: np.ndarray, heat, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """``frame`` uint8 ``[S, S, 3]`` with ``heat`` ``[S', S']`` in [0, 1] blended on top (resized to the frame
    when the sizes differ): ``(1 - alpha) * frame + alpha * colormap(heat)``; an RGB PIL image."""
    frame = np.asarray(frame, np.uint8)
    h = np.clip(np.asarray(heat.numpy() if isinstance(heat, torch.Tensor) else heat, np.float32), 0.0, 1.0)
    H, W = frame.shape[:2]
    if h.shape != (H, W):
        h = np.asarray(Image.fromarray(h, mode="F").resize((W, H), Image.BILINEAR))
    colour = matplotlib.colormaps[cmap](h)[..., :3] * 255.0
    out = (1.0 - alpha) * frame.astype(np.float32) + alpha * colour
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- metrics
def _binary(mask, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    m = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return m.astype(bool) if m.dtype == bool else m > threshold


def snippet_masks(mask, snippets: int, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """Per-frame masks ``[..., F, S, S]`` -> bool ``[..., T, S, S]``: a pixel of a snippet is manipulated when
    it is (``> threshold``) in ANY of the snippet's F / T frames."""
    m = _binary(mask, threshold)
    F = m.shape[-3]
    if F % snippets:
        raise ValueError(f"{F} mask frames are not a multiple of {snippets} snippets")
    return m.reshape(*m.shape[:-3], snippets, F // snippets, *m.shape[-2:]).any(axis=-3)


def _pairs(heat, mask, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to ``heat [K, S*S]``, ``mask bool [K, S*S]`` (per-frame masks reduced to snippets if needed)."""
    h = np.asarray(heat.numpy() if isinstance(heat, torch.Tensor) else heat, np.float64)
    m = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.shape != h.shape and m.ndim == h.ndim and m.ndim >= 3 and m.shape[-3] != h.shape[-3] \
            and m.shape[-2:] == h.shape[-2:]:
        m = snippet_masks(m, h.shape[-3], threshold)
    m = _binary(m, threshold)
    if m.shape != h.shape:
        raise ValueError(f"heat {h.shape} and mask {m.shape} differ")
    if h.ndim < 2:
        raise ValueError(f"expected maps [..., S, S], got {h.shape}")
    return h.reshape(-1, h.shape[-2] * h.shape[-1]), m.reshape(-1, m.shape[-2] * m.shape[-1])


def pointing_game(heat, mask, threshold: int = MASK_THRESHOLD) -> float:
    """Share of snippets whose heatmap maximum falls inside the manipulated region.

    ``heat`` ``[..., S, S]``; ``mask`` the same shape (or per-frame ``[..., F, S, S]``, reduced by
    :func:`snippet_masks`), manipulated where ``mask > threshold`` (bool masks as they are). Only snippets
    with a manipulated pixel count. A hit: the FIRST maximum (row-major) of the map lies in the mask; a flat
    map (max == min, e.g. all zeros) points nowhere and is a miss. NaN when no snippet has a mask."""
    h, m = _pairs(heat, mask, threshold)
    keep = m.any(1)
    if not keep.any():
        return math.nan
    h, m = h[keep], m[keep]
    arg = h.argmax(1)
    hit = m[np.arange(len(h)), arg] & (h.max(1) > h.min(1))
    return float(hit.mean())


def energy_ratio(heat, mask, threshold: int = MASK_THRESHOLD) -> float:
    """Share of the heatmap's energy inside the manipulated region, ``sum(heat * mask) / sum(heat)``, averaged
    over the snippets with a manipulated pixel and a non-zero map (NaN if none). A map spread evenly scores
    the mask's area fraction (see :func:`localisation_scores`' ``mask_area``), a perfect one 1.0."""
    h, m = _pairs(heat, mask, threshold)
    tot = h.sum(1)
    keep = m.any(1) & (tot > 0)
    if not keep.any():
        return math.nan
    return float(((h * m).sum(1)[keep] / tot[keep]).mean())


def localisation_scores(heat, mask, threshold: int = MASK_THRESHOLD) -> dict:
    """``pointing_game``, ``energy_inside`` (:func:`energy_ratio`), ``mask_area`` (mean area fraction of the
    masks: the energy share of a uniform map, the chance level) and ``snippets`` (snippets with a mask)."""
    h, m = _pairs(heat, mask, threshold)
    keep = m.any(1)
    return {"pointing_game": pointing_game(heat, mask, threshold),
            "energy_inside": energy_ratio(heat, mask, threshold),
            "mask_area": float(m[keep].mean(1).mean()) if keep.any() else math.nan,
            "snippets": int(keep.sum())}


def _nan_to_none(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def masked_fake_batches(ds: ClipDataset, batch_size: int, max_windows: Optional[int] = None) -> Iterator[list]:
    """The FAKE windows of ``ds`` (a :class:`ClipDataset` opened ``with_masks=True``) that carry a manipulation
    mask, in index order, ``batch_size`` items at a time: the windows Grad-CAM explains (``cache_features``
    stores their backbone maps in the same order and batches)."""
    idx = [i for i in range(len(ds)) if int(ds.index.iloc[i]["label"]) == 1]
    if max_windows is not None:
        idx = idx[:max_windows]
    batch: list[dict] = []
    for i in idx:
        item = ds[i]
        if "mask" not in item:
            continue
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def window_key(item: dict) -> tuple:
    """(dataset, method, video_id, window) of a :class:`ClipDataset` item: the key of the feature caches."""
    return (str(item["dataset"]), str(item["method"]), str(item["video_id"]), int(item["window"]))


def localisation_metrics(encoder, relation, crop_dir, split: str = "test", device: Optional[torch.device] = None,
                         batch_size: int = 4, threshold: int = MASK_THRESHOLD, max_windows: Optional[int] = None,
                         maps=None) -> dict:
    """Grad-CAM localisation over the FAKE windows of ``split`` that carry masks (demo fakes).

    ``maps``: a :class:`feature_cache.maps.FeatureMaps` of these windows (``cache_features``' backbone maps,
    from this ``encoder``): Grad-CAM then starts from them (:func:`gradcam_feature_maps`) instead of running
    the backbone on the clips (:func:`gradcam_windows`); a window missing from them is an error.

    Returns ``{pointing_game, energy_inside, mask_area, snippets, windows, videos, mask_threshold, method,
    per_method: {method: {...}}}``; the metrics are None when no window has a mask."""
    device = device or torch.device("cpu")
    model = MRLModel(encoder, relation).to(device).eval()
    ds = ClipDataset(crop_dir, split=split, with_masks=True)
    rows = maps.rows() if maps is not None else None
    heats, masks, methods, videos = [], [], [], set()
    try:
        for batch in masked_fake_batches(ds, batch_size, max_windows):
            if rows is None:
                x = clip_to_tensor(torch.stack([b["clip"] for b in batch])).to(device)
                h = gradcam_windows(model, x, per="snippet").numpy()
            else:
                missing = [window_key(b) for b in batch if window_key(b) not in rows]
                if missing:
                    raise InputRefused(f"the feature maps hold no window {missing[0]} of the crops' {split} split "
                                       f"(written from other crops)", fix="re-run cache_features (dvc repro)")
                f0 = torch.from_numpy(np.stack([maps.maps[rows[window_key(b)]] for b in batch])).to(device)
                h = gradcam_feature_maps(model, f0, size=int(batch[0]["clip"].shape[1]), per="snippet").numpy()
            T = h.shape[1]
            for b, hh in zip(batch, h):
                heats.append(hh)
                masks.append(snippet_masks(b["mask"], T, threshold))
                methods.append(b["method"])
                videos.add((b["dataset"], b["method"], b["video_id"]))
    finally:
        ds.close()
    source = "the clips" if maps is None else "the cached backbone maps F_0 (cache_features)"
    out = {"method": f"captum LayerGradCam on encoder.feature_layer, fake logit of encoder + relation, from {source}",
           "mask_threshold": threshold, "split": split, "windows": len(heats), "videos": len(videos)}
    if not heats:
        out.update(pointing_game=None, energy_inside=None, mask_area=None, snippets=0, per_method={},
                   note="no fake window with a manipulation mask in this split")
        return out
    H, M = np.stack(heats), np.stack(masks)
    out.update(_nan_to_none(localisation_scores(H, M, threshold)))
    per = {}
    meth = np.asarray(methods)
    for name in sorted(set(methods)):
        sel = meth == name
        per[name] = {**_nan_to_none(localisation_scores(H[sel], M[sel], threshold)), "windows": int(sel.sum())}
    out["per_method"] = per
    return out
