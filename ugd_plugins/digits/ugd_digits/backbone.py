"""The ``digits`` backbone: the shipped 32x32 DDPM as a ugd pixel backbone."""

from __future__ import annotations

from pathlib import Path

from ugd_core.backbones import DiffusersPixelBackbone
from ugd_core.errors import UgdError

from .models import backbone_scheduler, backbone_unet

WEIGHTS = Path(__file__).resolve().parent / "weights" / "backbone.safetensors"
TRAIN_COMMAND = "python -m ugd_digits.train_backbone --minutes 60"


def load_backbone(weights: str = "", device: str = "cpu") -> DiffusersPixelBackbone:
    """Build the UNet from its config and load the shipped (or given) safetensors weights."""
    from safetensors.torch import load_file

    path = Path(weights) if weights else WEIGHTS
    if not path.is_file():
        raise UgdError(f"digits backbone weights not found at {path}; train them with `{TRAIN_COMMAND}` or pass --backbone digits:weights=PATH")
    unet = backbone_unet()
    try:
        unet.load_state_dict(load_file(str(path)))
    except Exception as exc:
        raise UgdError(f"cannot load digits backbone weights from {path} ({type(exc).__name__}); retrain with `{TRAIN_COMMAND}`") from None
    return DiffusersPixelBackbone(unet, backbone_scheduler(), device=device)
