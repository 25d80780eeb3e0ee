"""Network definitions of the digits world.

The backbone is a stock diffusers ``UNet2DModel`` with a diffusers scheduler.
The guides and evaluators are small CNNs written here because no installed
library ships networks for 32x32 single-channel digit canvases; each is a
handful of torchvision-style conv blocks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

BACKBONE_CONFIG = dict(
    sample_size=32,
    in_channels=1,
    out_channels=1,
    block_out_channels=(16, 32, 64),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",  # cosine schedule (Nichol & Dhariwal 2021), better than linear at 32x32
    prediction_type="epsilon",
    clip_sample=False,
)


def backbone_unet():
    """A fresh (random-weight) digits backbone UNet."""
    from diffusers import UNet2DModel

    return UNet2DModel(**BACKBONE_CONFIG)


def load_backbone_unet(path: Path, backbone: str, train_command: str) -> nn.Module:
    """The backbone UNet with the safetensors weights at ``path``; a missing or unloadable file is one UgdError
    naming ``backbone``, the fix (``train_command``) and the ``weights=`` parameter."""
    from safetensors.torch import load_file

    from ugd_core.errors import UgdError

    if not path.is_file():
        raise UgdError(f"{backbone} backbone weights not found at {path}; train them with `{train_command}` "
                       f"or pass --backbone {backbone}:weights=PATH")
    unet = backbone_unet()
    try:
        unet.load_state_dict(load_file(str(path)))
    except Exception as exc:
        raise UgdError(f"cannot load {backbone} backbone weights from {path} ({type(exc).__name__}); retrain with `{train_command}`") from None
    return unet


def backbone_scheduler():
    """The noise schedule the digits backbone was trained with."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def _block(cin: int, cout: int, act: type[nn.Module] = nn.SiLU, norm: str = "batch") -> nn.Sequential:
    n = nn.BatchNorm2d(cout) if norm == "batch" else nn.GroupNorm(8, cout)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), n, act())


class ConvNet(nn.Module):
    """Plain VGG-like encoder: conv blocks with pooling, global average pool, linear heads.

    ``width`` and ``act`` vary between the guide and evaluator families so that a
    guide is never judged by its own architecture.
    """

    def __init__(self, outputs: int, width: int = 32, act: type[nn.Module] = nn.SiLU, norm: str = "batch"):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(1, w, act, norm), _block(w, w, act, norm), nn.MaxPool2d(2),  # 16
            _block(w, 2 * w, act, norm), _block(2 * w, 2 * w, act, norm), nn.MaxPool2d(2),  # 8
            _block(2 * w, 4 * w, act, norm), _block(4 * w, 4 * w, act, norm),
        )
        self.head = nn.Linear(4 * w, outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features [N, 4*width]."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class ResNetSmall(nn.Module):
    """A small residual network (different family from ``ConvNet``) used by evaluators."""

    def __init__(self, outputs: int, width: int = 24):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.ModuleList([self._stage(w, w, 1), self._stage(w, 2 * w, 2), self._stage(2 * w, 4 * w, 2)])
        self.head = nn.Linear(4 * w, outputs)

    @staticmethod
    def _stage(cin: int, cout: int, stride: int) -> nn.ModuleDict:
        return nn.ModuleDict(
            dict(
                body=nn.Sequential(
                    nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout),
                ),
                skip=nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), nn.BatchNorm2d(cout)),
            )
        )

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after the stem and each stage."""
        h = self.stem(x)
        maps = [h]
        for s in self.stages:
            h = torch.relu(s["body"](h) + s["skip"](h))
            maps.append(h)
        return maps

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features."""
        return self.feature_maps(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class SegNet(nn.Module):
    """Tiny encoder-decoder producing per-pixel logits (background, ink)."""

    def __init__(self, width: int = 16, classes: int = 2):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_block(1, w), _block(w, w))
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), _block(w, 2 * w), _block(2 * w, 2 * w))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec = nn.Sequential(_block(3 * w, w), nn.Conv2d(w, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.enc1(x)
        b = self.enc2(a)
        return self.dec(torch.cat([a, self.up(b)], dim=1))


class BoxNet(nn.Module):
    """Object-location network: ``ConvNet`` conv features, then a small MLP on the *flattened* 8x8 map.

    Global average pooling would throw away where the digit is, so the box head
    reads the spatial map. Returns ``(box, logits)``: the tight box normalised to
    [0, 1] as (x0, y0, x1, y1), always valid (x1 > x0, y1 > y0) because it is
    parameterised as a sigmoid centre and size, and 10 class logits.
    """

    def __init__(self, classes: int = 10, width: int = 16, hidden: int = 128):
        super().__init__()
        self.backbone = ConvNet(classes, width)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 8 * 8, hidden), nn.SiLU(), nn.Linear(hidden, 4 + classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(self.backbone.features(x))
        c = torch.sigmoid(out[:, :2])  # centre (x, y)
        s = torch.sigmoid(out[:, 2:4])  # size (w, h)
        box = torch.cat([c - s / 2, c + s / 2], dim=1)
        return box, out[:, 4:]
