"""ugd-sd: Stable Diffusion 1.x, 2.x (v-prediction) and XL pipelines as ugd backbones."""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .backbone import StableDiffusionBackbone, StableDiffusionXLBackbone, TextCondition

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["StableDiffusionBackbone", "StableDiffusionXLBackbone", "TextCondition"], "backbone"),
})

__all__ = ["StableDiffusionBackbone", "StableDiffusionXLBackbone", "TextCondition"]
