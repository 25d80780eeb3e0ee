"""The ``digits`` backbone: the shipped 32x32 DDPM as a ugd pixel backbone."""

from __future__ import annotations

from pathlib import Path

from ugd_core.backbones import DiffusersPixelBackbone

from .models import backbone_scheduler, load_backbone_unet

WEIGHTS = Path(__file__).resolve().parent / "weights" / "backbone.safetensors"
TRAIN_COMMAND = "python -m ugd_digits.train_backbone --minutes 60"


def load_backbone(weights: str = "", device: str = "cpu") -> DiffusersPixelBackbone:
    """Build the UNet from its config and load the shipped (or given) safetensors weights."""
    unet = load_backbone_unet(Path(weights) if weights else WEIGHTS, "digits", TRAIN_COMMAND)
    return DiffusersPixelBackbone(unet, backbone_scheduler(), device=device)
