"""Loading the models the pipeline writes. Both files are plain dicts of tensors and JSON-able
metadata, so they load with ``torch.load(weights_only=True)``: no pickled code runs."""
from __future__ import annotations

from pathlib import Path

import torch

from graph_models import EdgeMasking, build_encoder, build_relation
from pipeline.errors import InputRefused
from pipeline.params import ClipParams, EncoderParams, RelationParams

__all__ = ["load_encoder", "load_relation", "load_joint_head", "read_model_file"]


#: what to do about a model file that does not load (a stage prints it: pipeline.errors)
BROKEN_FIX = ("the file is damaged (e.g. cut short) or not one this project wrote: bring back the last one with "
              "`dvc checkout`, or write it again by re-running the stage that makes it (`dvc repro -f -s <stage>`)")


def read_model_file(path: str | Path, expected_format: str) -> dict:
    """The dict of a model file, loaded with ``weights_only=True``. A file that does not load (cut short, a
    pickle with code in it) or has another format is an :class:`~pipeline.errors.InputRefused` (a
    ``ValueError``) naming it: ``evaluate`` and ``mrl detect`` say which file is broken."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or a pickle with code in it
        raise InputRefused(f"{path}: not a model file this project wrote ({type(exc).__name__}: {exc})",
                           fix=BROKEN_FIX) from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise InputRefused(f"{path}: expected format {expected_format!r}, found {got!r}", fix=BROKEN_FIX)
    return obj


def load_encoder(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild the trained encoder (backbone + STA) from ``models/encoder.pt``; returns (encoder, meta)."""
    meta = read_model_file(path, "mrl-encoder/1")
    enc_p = EncoderParams(**{**meta["encoder"], "pretrained": None})
    enc = build_encoder(enc_p, ClipParams(**meta["clip"]))
    enc.load_state_dict(meta["state_dict"])
    return enc.to(device).eval(), meta


def load_relation(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild the trained relation learner from ``models/relation.pt``; returns (relation, meta)."""
    meta = read_model_file(path, "mrl-relation/1")
    rel = build_relation(meta["in_dim"], meta["heads"], RelationParams(**meta["relation"]),
                         EdgeMasking.from_config(meta["mask"]))
    rel.load_state_dict(meta["state_dict"])
    return rel.to(device).eval(), meta


def load_joint_head(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild the relation head trained jointly with the encoder (Algorithm 2, Eq. 12) from
    ``models/encoder.pt`` (its ``head_state_dict``, ``head`` and ``head_mask``); returns (head, meta).
    With the encoder of the same file it is the jointly trained model; it reads the encoder's vertices."""
    meta = read_model_file(path, "mrl-encoder/1")
    missing = [k for k in ("head_state_dict", "head", "head_mask", "out_dim", "heads") if k not in meta]
    if missing:
        raise ValueError(f"{path}: no jointly trained relation head stored (missing {', '.join(missing)}); "
                         f"re-run train_encoder")
    head = build_relation(meta["out_dim"], meta["heads"], RelationParams(**meta["head"]),
                          EdgeMasking.from_config(meta["head_mask"]))
    head.load_state_dict(meta["head_state_dict"])
    return head.to(device).eval(), meta
