"""What a model file must carry so that inference reproduces training: the face-crop settings.

A detector is only as good as the agreement between its training crops and the crops it sees at test
time (image size, margin, detector resolution and thresholds, box smoothing, window length). The
``train_encoder`` stage stores them in ``models/encoder.pt`` under the key ``"crop"``::

    payload["crop"] = crop_config_from_params(p.crop, p.clip)

and :func:`crop_params_from_model` rebuilds :class:`~pipeline.params.CropParams` from it (falling back to
a params file, with a warning, for model files written before the key existed).

``crop`` dict (format ``mrl-crop/1``): every :class:`CropParams` field except ``out_dir``, ``num_workers`` and
``compression`` (they do not change a pixel of the crops), plus ``clip_frames`` (the window length F = T*D the
crops were cut into), ``snippet_length`` (D) and ``params_hash`` (the crop stage's hash of those settings).
Only plain JSON types, so the model file still loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pipeline.ingest.crop_settings import params_hash
from pipeline.params import ClipParams, CropParams, load_params

__all__ = ["CROP_CONFIG_FORMAT", "crop_config_from_params", "crop_params_from_config", "crop_params_from_model"]

CROP_CONFIG_FORMAT = "mrl-crop/1"
_NOT_STORED = {"out_dir", "compression", "num_workers"}


def crop_config_from_params(crop: CropParams, clip: ClipParams) -> dict:
    """The ``crop`` section (and the window length of the ``clip`` section) as a JSON-able dict to store in a
    model file (see module docstring)."""
    cfg = {k: v for k, v in crop.model_dump(mode="json").items() if k not in _NOT_STORED}
    cfg.update(format=CROP_CONFIG_FORMAT, clip_frames=int(clip.frames), snippet_length=int(clip.snippet_length),
               params_hash=params_hash(clip.frames, crop))
    return cfg


def crop_params_from_config(cfg: dict) -> tuple[CropParams, int]:
    """``(CropParams, clip_frames)`` from a dict written by :func:`crop_config_from_params`."""
    if cfg.get("format") not in (None, CROP_CONFIG_FORMAT):
        raise ValueError(f"crop config format {cfg.get('format')!r} is not {CROP_CONFIG_FORMAT!r}")
    fields = {k: v for k, v in cfg.items() if k in CropParams.model_fields}
    return CropParams(**fields), int(cfg["clip_frames"])


def crop_params_from_model(meta: dict, fallback_params: Optional[str | Path] = "params.yaml"
                           ) -> tuple[CropParams, int, str, list[str]]:
    """Crop settings for a loaded encoder ``meta``: ``(crop, clip_frames, source, warnings)``.

    ``source`` is ``"model"`` when the file carries them, else the fallback params file (its ``crop``
    section, with ``image_size`` and the window length forced to the model's own, and a warning that the
    crops may differ from the training crops). No fallback and no stored config is an error."""
    warnings: list[str] = []
    clip = ClipParams(**meta["clip"]) if "clip" in meta else None
    frames = clip.frames if clip is not None else None
    if meta.get("crop"):
        crop, cfg_frames = crop_params_from_config(meta["crop"])
        if frames is not None and cfg_frames != frames:
            warnings.append(f"model crop config says windows of {cfg_frames} frames, the encoder was built for "
                            f"{frames}: using {frames}")
        if meta.get("image_size") and int(meta["image_size"]) != crop.image_size:
            warnings.append(f"model crop config image_size {crop.image_size} != encoder image_size "
                            f"{meta['image_size']}: using {meta['image_size']}")
            crop = crop.model_copy(update={"image_size": int(meta["image_size"])})
        return crop, int(frames or cfg_frames), "model", warnings
    if fallback_params is None or not Path(fallback_params).exists():
        raise ValueError("the model file carries no crop settings (key 'crop') and no params file to fall back "
                         f"on ({fallback_params}); cannot reproduce the training crops")
    p = load_params(fallback_params)
    crop = p.crop
    if meta.get("image_size"):
        crop = crop.model_copy(update={"image_size": int(meta["image_size"])})
    frames = int(frames or p.clip.frames)
    warnings.append(f"the model file carries no crop settings (written before 'crop' was stored): using the crop "
                    f"section of {fallback_params} (image_size {crop.image_size}, windows of {frames} frames); "
                    f"if the model was trained with other crop settings its scores are not reliable")
    return crop, frames, str(fallback_params), warnings
