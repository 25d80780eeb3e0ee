"""The ``digits-flow`` backbone: a rectified flow trained on the digits world (``train_flow``), the same
``UNet2DModel`` as the ``digits`` DDPM, sampled through ugd's flow adapter (``ugd_kit.flow``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ugd_core.backbones import module_dtype, refuse_prompt
from ugd_core.guidance import freeze
from ugd_kit.flow import FlowBackbone, FlowSchedule

from .models import load_backbone_unet

WEIGHTS = Path(__file__).resolve().parent / "weights" / "flow_backbone.safetensors"
TRAIN_COMMAND = "python -m ugd_digits.train_flow --minutes 150"


def flow_scheduler():
    """diffusers' Euler scheduler of rectified flows, unshifted (32x32 pixels): sigmas linspace(1, 1/1000, n)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


class DigitsFlowBackbone(FlowBackbone):
    """The velocity UNet v(x, 1000 sigma) of ``train_flow`` as an eps backbone."""

    def __init__(self, unet: nn.Module, device: str | torch.device = "cpu"):
        self.unet = unet
        super().__init__(None, FlowSchedule(flow_scheduler()), (1, 32, 32), device=device)
        unet.to(self.device)
        freeze(unet)
        self._attn_processors = {}

    def _modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.unet}

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> None:
        refuse_prompt("the digits-flow backbone", prompt, negative_prompt)
        return None

    def velocity(self, x: Tensor, t: Tensor, cond: object) -> Tensor:
        dtype = module_dtype(self.unet)
        return self.unet(x.to(dtype), t.to(self.device, dtype), return_dict=False)[0]


def load_flow_backbone(weights: str = "", device: str = "cpu") -> DigitsFlowBackbone:
    """Build the UNet from its config and load the shipped (or given) flow weights."""
    return DigitsFlowBackbone(load_backbone_unet(Path(weights) if weights else WEIGHTS, "digits-flow", TRAIN_COMMAND), device=device)
