"""Style guidance: ``l = sum_layers mean((G_l(D(x0_hat)) - G_l(style))^2)`` over VGG features.

Gram matrices of convolutional features capture texture and colour statistics
independent of layout (Gatys, Ecker & Bethge 2016). ``G = F F^T / (C H W)`` for
features F [C, H*W] of one layer; the default layers are Gatys' relu1_1 ..
relu5_1. Bansal et al. 2023's official style experiment instead compares CLIP
image embeddings (scripts/style_transfer.py: OpenAI CLIP RN50); ``variant=clip``
does that through the ugd-clip plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ugd_core.errors import UgdError
from ugd_kit.images import load_image
from ugd_kit.weights import find_weights, hub_checkpoint, read_state_dict

DEFAULT_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPTION = "--guide style:weights=/path/to/vgg16.pth"
WEIGHTS = {"vgg16": "VGG16_Weights", "vgg19": "VGG19_Weights"}
CFG = {"vgg16": "D", "vgg19": "E"}  # torchvision.models.vgg.cfgs keys


def vgg_features(arch: str) -> nn.Sequential:
    """A randomly initialised VGG ``features`` stack (without the 120M-parameter classifier)."""
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs[CFG[arch]], batch_norm=False)


def layer_names(features: nn.Sequential) -> list[str]:
    """Names of a VGG ``features`` stack: conv{block}_{i}, relu{block}_{i}, pool{block}."""
    names, block, i = [], 1, 0
    for m in features:
        if isinstance(m, nn.Conv2d):
            i += 1
            names.append(f"conv{block}_{i}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{block}_{i}")
        elif isinstance(m, nn.MaxPool2d):
            names.append(f"pool{block}")
            block, i = block + 1, 0
        else:
            names.append(f"{type(m).__name__.lower()}{block}_{i}")
    return names


def parse_layers(layers: str | Sequence[str]) -> list[str]:
    """``"relu1_1,relu2_1"`` (or separated by ';' / '+') -> names."""
    if isinstance(layers, str):
        return [p.strip() for p in layers.replace(";", ",").replace("+", ",").split(",") if p.strip()]
    return list(layers)


def gram(feat: Tensor) -> Tensor:
    """Normalised Gram matrices [N, C, C] of features [N, C, H, W]."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class GramStyleGuide:
    """Gram-matrix style loss on a VGG ``features`` stack (only the layers up to the deepest one used run).

    ``image`` (path or [1, 3, H, W] tensor in [-1, 1]) is the style reference;
    ``size`` resizes both it and the guided images (0 = keep).
    """

    differentiable = True

    def __init__(
        self,
        features: nn.Sequential,
        *,
        image: str | Path | Tensor,
        layers: str | Sequence[str] = DEFAULT_LAYERS,
        size: int = 256,
        name: str = "style",
        device: str | torch.device = "cpu",
    ):
        self.name = name
        names = layer_names(features)
        wanted = parse_layers(layers)
        unknown = [w for w in wanted if w not in names]
        if not wanted or unknown:
            relus = [n for n in names if n.startswith("relu")]
            raise UgdError(f"{name}: unknown layer(s) {unknown or wanted}; choose from {', '.join(relus)}")
        self.layers = wanted
        self.index = sorted(names.index(w) for w in wanted)
        self.features = nn.Sequential(*list(features)[: self.index[-1] + 1])
        for m in self.features:  # in-place ReLUs would overwrite the features we keep
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.features.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.features.to(self.device)
        self.size = int(size)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        ref = image if isinstance(image, Tensor) else load_image(image, name)
        with torch.no_grad():
            self.target: list[Tensor] = self.f(self.preprocess(ref.to(self.device)))

    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1], resize to size x size, ImageNet mean/std."""
        x = (images + 1) / 2
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean.to(x)) / self.std.to(x)

    def f(self, x: Tensor) -> list[Tensor]:
        """Gram matrices of the chosen layers."""
        grams, keep = [], set(self.index)
        for i, m in enumerate(self.features):
            x = m(x)
            if i in keep:
                grams.append(gram(x))
        return grams

    def loss(self, output: list[Tensor], target: list[Tensor]) -> Tensor:
        """Sum over layers of the mean squared Gram difference: shape [N]."""
        return sum(((g - t.to(g)) ** 2).mean(dim=(1, 2)) for g, t in zip(output, target))  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> "GramStyleGuide":
        self.device = torch.device(device)
        self.features.to(self.device)
        self.target = [t.to(self.device) for t in self.target]
        return self


def load_vgg_features(arch: str = "vgg16", weights: str = "", upto: int | None = None, device: str | torch.device = "cpu") -> nn.Sequential:
    """VGG ``features`` (up to index ``upto``) from a state dict or torchvision's cache; never downloads.

    The state dict may be a whole VGG (``features.N.*`` keys) or just the features;
    only the layers that are used need to be present.
    """
    import torchvision.models as tvm

    if arch not in WEIGHTS:
        raise UgdError(f"style: unknown arch {arch!r}; choose vgg16 or vgg19")
    default = getattr(tvm, WEIGHTS[arch]).IMAGENET1K_V1
    path = find_weights(f"torchvision {arch} ({default})", OPTION.replace("vgg16", arch), weights, hub_checkpoint(default.url))
    state = read_state_dict(path, "style")
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith(("classifier.", "avgpool."))}
    features = vgg_features(arch)
    if upto is not None:
        features = nn.Sequential(*list(features)[: upto + 1])
    needed = set(features.state_dict())
    missing = sorted(needed - set(state))
    if missing:
        raise UgdError(f"style: {str(path)!r} lacks {arch} feature weights {missing[:3]}; pass a full {arch} state dict")
    features.load_state_dict({k: state[k] for k in needed})
    features.eval().requires_grad_(False)
    return features.to(device)


def build_style_guide(
    image: str,
    variant: str = "gram",
    arch: str = "vgg16",
    layers: str = ",".join(DEFAULT_LAYERS),
    weights: str = "",
    size: int = 256,
    model: str = "",
    device: str = "cpu",
) -> Any:
    """Factory behind ``--guide style:image=PATH,...``."""
    ref = load_image(image, "style")  # fail on a bad path before loading weights
    if variant == "clip":
        return clip_style_guide(image, model, device)
    if variant != "gram":
        raise UgdError(f"style: variant={variant!r} is not one of gram, clip")
    names = layer_names(vgg_features(arch)) if arch in WEIGHTS else []
    wanted = parse_layers(layers)
    if arch in WEIGHTS and any(w not in names for w in wanted):
        bad = [w for w in wanted if w not in names]
        raise UgdError(f"style: unknown layer(s) {bad}; choose from {', '.join(n for n in names if n.startswith('relu'))}")
    upto = max(names.index(w) for w in wanted) if names and wanted else None
    features = load_vgg_features(arch, weights, upto, device)
    return GramStyleGuide(features, image=ref, layers=wanted, size=size, device=device)


def clip_style_guide(image: str, model: str = "", device: str = "cpu") -> Any:
    """``variant=clip``: the ``clip`` guide (another plugin, reached through the registry) with ``image=``.

    Bansal et al.'s style experiment: 1 - cos between CLIP image embeddings of the
    sample and of the style image.
    """
    from ugd_core.registry import get_registry

    registry = get_registry()
    if "clip" not in registry.entries["guide"]:
        raise UgdError("style: variant=clip needs the `clip` guide of the ugd-clip plugin; `pip install -e ugd_plugins/clip`")
    params = {"image": image, **({"model": model} if model else {})}
    try:
        guide = registry.build("guide", "clip", params, device=device)
    except UgdError as exc:
        raise UgdError(f"style (variant=clip, through the clip guide): {exc}") from None
    guide.name = "style"
    return guide
