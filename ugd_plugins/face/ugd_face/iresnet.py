"""The ArcFace IResNet backbone (Deng et al. 2019; insightface ``recognition/arcface_torch``).

Module names follow insightface's ``backbones/iresnet.py`` so its ``backbone.pth``
state dicts load unchanged. Input: 112 x 112 RGB faces normalised as
``(x - 0.5) / 0.5``; output: a ``num_features``-d embedding (512 for the released
models). ``widths`` exists for tiny test networks; released models use the default.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3), "iresnet100": (3, 13, 30, 3), "iresnet200": (6, 26, 60, 6)}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the (projected) identity."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    """Improved ResNet for face recognition: stride-2 stages, BN-dropout-FC-BN embedding head."""

    fc_scale = 7 * 7

    def __init__(self, layers: Sequence[int], num_features: int = 512, dropout: float = 0.0, widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-5)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1])
        self.layer3 = self._make_layer(widths[2], layers[2])
        self.layer4 = self._make_layer(widths[3], layers[3])
        self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(widths[3] * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
        )
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def iresnet18(**kw) -> IResNet:  # type: ignore[no-untyped-def]
    return IResNet(LAYERS["iresnet18"], **kw)


def iresnet34(**kw) -> IResNet:  # type: ignore[no-untyped-def]
    return IResNet(LAYERS["iresnet34"], **kw)


def iresnet50(**kw) -> IResNet:  # type: ignore[no-untyped-def]
    return IResNet(LAYERS["iresnet50"], **kw)


def iresnet100(**kw) -> IResNet:  # type: ignore[no-untyped-def]
    return IResNet(LAYERS["iresnet100"], **kw)


def iresnet200(**kw) -> IResNet:  # type: ignore[no-untyped-def]
    return IResNet(LAYERS["iresnet200"], **kw)


def from_state_dict(state: dict[str, Tensor]) -> IResNet:
    """An IResNet shaped after a state dict (depths, widths and embedding size read from its keys)."""
    layers = []
    for i in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")}
        if not idx:
            raise KeyError(f"layer{i}")
        layers.append(max(idx) + 1)
    widths = [int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)]
    return IResNet(layers, num_features=int(state["fc.weight"].shape[0]), widths=widths)
