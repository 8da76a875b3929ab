"""The crop settings that change a pixel of the crops, and their hash: the identity of the crop stage's outputs
(stored in every crop file) and of the crops a model was trained on (``pipeline.model_card`` stores it in the
encoder file). Kept apart from :mod:`pipeline.ingest.cropping` so that a reader of the hash imports no cropping
code."""
from __future__ import annotations

import hashlib
import json

__all__ = ["SCHEMA_VERSION", "NOT_HASHED", "params_hash"]

#: version of the per-video crop file layout (docs/CONTRACTS.md); part of the hash
SCHEMA_VERSION = 1
#: fields of ``CropParams`` that do not change the crops (not part of the hash)
NOT_HASHED = {"out_dir", "detect_batch", "num_workers"}


def params_hash(clip_frames: int, crop) -> str:
    d = {k: v for k, v in crop.model_dump(mode="json").items() if k not in NOT_HASHED}
    d["clip_frames"] = int(clip_frames)
    d["schema_version"] = SCHEMA_VERSION
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
