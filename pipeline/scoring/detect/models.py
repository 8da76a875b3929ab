"""``mrl detect``, the model: the pipeline's model files (safe ``weights_only`` loading, :mod:`pipeline.model_io`) or
an MLflow model (a pickle: only with ``--trust-pickle``), with the crop settings it was trained with and its
decision threshold."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from graph_models import MRLModel, RelationLearner
from pipeline.model_card import crop_params_from_model
from pipeline.model_io import load_encoder, load_relation, read_model_file
from pipeline.model_options import mlflow_uri
from pipeline.params import CropParams
from pipeline.runtime import sha256_file
from pipeline.tracking import tracking_uri as default_uri

# MLflow is imported inside load_mlflow_model on purpose (deferred heavy import, seconds): scoring model
# files never needs it.

__all__ = ["LoadedModel", "PickleRefused", "PICKLE_MESSAGE", "load_model_files", "load_mlflow_model",
           "load_from_options"]

PICKLE_MESSAGE = (
    "refusing to load {what} without --trust-pickle: MLflow stores PyTorch models of this pipeline as pickles "
    "(serialization_format='pickle'), and unpickling a file runs whatever code it contains, with your "
    "permissions. Pass --trust-pickle only for a model you or your own pipeline logged to a tracking server you "
    "trust; the model files models/encoder.pt and models/relation.pt hold tensors and metadata only and load "
    "safely (torch.load(weights_only=True)) without it.")


class PickleRefused(PermissionError):
    """An MLflow (pickled) model was requested without ``--trust-pickle``."""


@dataclass
class LoadedModel:
    """Everything detect needs: the two halves of the model, the crop settings, the threshold."""

    encoder: torch.nn.Module
    relation: torch.nn.Module
    crop: CropParams
    frames: int                       # F = T * D frames per window
    snippet_length: int               # D
    threshold: Optional[float]        # stored decision threshold (validation EER), None if unknown
    crop_source: str                  # "model", a params file, or "mlflow run <id> params"
    source: dict                      # where the model came from (paths / uris, hashes)
    warnings: list = field(default_factory=list)

    @property
    def snippets(self) -> int:
        return self.frames // self.snippet_length


def _check_pair(encoder, relation, frames: int, snippet_length: int, rel_meta: Optional[dict]) -> None:
    if relation.heads != encoder.heads or relation.in_dim != encoder.out_dim:
        raise ValueError(f"relation expects vertices [N={relation.heads}, C={relation.in_dim}] but the encoder "
                         f"gives [N={encoder.heads}, C={encoder.out_dim}]: the two files do not belong together")
    if rel_meta and rel_meta.get("snippets") and int(rel_meta["snippets"]) != frames // snippet_length:
        raise ValueError(f"relation was trained on {rel_meta['snippets']} snippets per window, the encoder makes "
                         f"{frames // snippet_length}")


def load_model_files(encoder_path: str | Path = "models/encoder.pt", relation_path: str | Path = "models/relation.pt",
                     device: torch.device | str = "cpu", fallback_params: Optional[str | Path] = "params.yaml"
                     ) -> LoadedModel:
    """The pipeline's model files (safe ``weights_only`` loading) with their crop settings and threshold."""
    encoder, emeta = load_encoder(encoder_path, device)
    relation, rmeta = load_relation(relation_path, device)
    frames, D = int(emeta["clip"]["frames"]), int(emeta["clip"]["snippet_length"])
    _check_pair(encoder, relation, frames, D, rmeta)
    crop, frames, crop_source, warnings = crop_params_from_model(emeta, fallback_params)
    sha = sha256_file(encoder_path)
    if rmeta.get("encoder_sha256") and rmeta["encoder_sha256"] != sha:
        warnings.append(f"{relation_path} was trained on the features of another encoder than {encoder_path} "
                        f"(SHA-256 differs): its scores are not reliable; re-run cache_features + train_relation")
    thr = rmeta.get("threshold")
    return LoadedModel(encoder, relation, crop, frames, D, None if thr is None else float(thr), crop_source,
                       {"encoder": str(encoder_path), "relation": str(relation_path), "encoder_sha256": sha,
                        "relation_encoder_sha256": rmeta.get("encoder_sha256") or None,
                        "encoder_params": emeta.get("encoder"), "clip": emeta.get("clip"),
                        "relation_params": rmeta.get("relation")}, warnings)


def _parse_param(v: str) -> Any:
    if v == "":
        return None
    try:
        return yaml.safe_load(v)
    except Exception:
        return v


def _crop_from_run_params(params: dict) -> tuple[Optional[CropParams], Optional[int], Optional[int]]:
    crop = {k[len("crop."):]: _parse_param(v) for k, v in params.items() if k.startswith("crop.")}
    crop = {k: v for k, v in crop.items() if k in CropParams.model_fields}
    frames = _parse_param(params.get("clip.frames", ""))
    D = _parse_param(params.get("clip.snippet_length", ""))
    return (CropParams(**crop) if crop else None), frames, D


def load_mlflow_model(uri: str, trust_pickle: bool = False, device: torch.device | str = "cpu",
                      encoder_path: Optional[str | Path] = None, fallback_params: Optional[str | Path] = "params.yaml",
                      tracking_uri: Optional[str] = None) -> LoadedModel:
    """A model logged to MLflow: ``runs:/RUN_ID/model`` or ``models:/NAME/VERSION`` (``models:/NAME@alias``).

    The full model logged by ``train_encoder`` (encoder + its relation head) is used as it is; a relation
    learner logged by ``train_relation`` is paired with the encoder file ``encoder_path``. The crop settings
    come from the encoder file when it is used, else from the run's logged params (``crop.*``, ``clip.*``);
    the threshold from the run's ``threshold`` metric (train_relation), else none (0.5 with a warning).
    Raises :class:`PickleRefused` without ``trust_pickle`` (see :data:`PICKLE_MESSAGE`)."""
    if not trust_pickle:
        raise PickleRefused(PICKLE_MESSAGE.format(what=uri))
    import mlflow  # deferred on purpose (seconds to import): see the note at the top
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri or default_uri())
    client = MlflowClient()
    run_id = None
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].split("/")[0]
    elif uri.startswith("models:/"):
        ref = uri[len("models:/"):]
        try:
            if "@" in ref:
                name, alias = ref.split("@", 1)
                run_id = client.get_model_version_by_alias(name, alias).run_id
            else:
                name, version = ref.split("/", 1)
                run_id = client.get_model_version(name, version).run_id
        except Exception:
            run_id = None
    model = mlflow.pytorch.load_model(uri, map_location=torch.device(device) if not isinstance(device, torch.device)
                                      else device)
    warnings: list[str] = []
    run = client.get_run(run_id) if run_id else None
    params = run.data.params if run else {}
    if isinstance(model, MRLModel):
        encoder, relation, emeta_path = model.encoder, model.relation, None
        warnings.append("scoring with the relation head trained jointly with the encoder (train_encoder's model), "
                        "not the train_relation stage's relation learner")
    elif isinstance(model, RelationLearner):
        if encoder_path is None:
            raise ValueError(f"{uri} is a relation learner: give the encoder file it was trained with (--encoder)")
        encoder, _ = load_encoder(encoder_path, device)
        relation, emeta_path = model, encoder_path
    else:
        raise ValueError(f"{uri}: expected an MRLModel or a RelationLearner, got {type(model).__name__}")
    encoder.to(device).eval()
    relation.to(device).eval()
    frames, D = None, encoder.snippet_length
    if emeta_path is not None:
        emeta = read_model_file(emeta_path, "mrl-encoder/1")
        crop, frames, crop_source, w = crop_params_from_model(emeta, fallback_params)
        warnings += w
    else:
        crop, frames, d = _crop_from_run_params(params)
        crop_source = f"mlflow run {run_id} params"
        if crop is None or frames is None:
            raise ValueError(f"{uri}: the run's params do not record the crop settings (crop.*, clip.frames)")
        if d and int(d) != D:
            raise ValueError(f"run params say snippet_length {d}, the model's encoder uses {D}")
    _check_pair(encoder, relation, int(frames), D, None)
    thr = None
    if run is not None and "threshold" in run.data.metrics:
        thr = float(run.data.metrics["threshold"])
    return LoadedModel(encoder, relation, crop, int(frames), D, thr, crop_source,
                       {"mlflow_model": uri, "mlflow_run_id": run_id, "encoder": str(emeta_path) if emeta_path else None},
                       warnings)


def load_from_options(args: argparse.Namespace, device: torch.device | str = "cpu") -> LoadedModel:
    """The model ``mrl detect``'s and ``mrl serve``'s model options name (:mod:`pipeline.model_options`): an
    MLflow model (paired with ``--encoder`` when that file exists) or the model files."""
    uri = mlflow_uri(args)
    if uri:
        enc = args.encoder if Path(args.encoder).exists() else None
        return load_mlflow_model(uri, args.trust_pickle, device, enc, args.params, args.tracking_uri)
    return load_model_files(args.encoder, args.relation, device, args.params)
