"""ugd-sd: Stable Diffusion 1.x, 2.x (v-prediction), XL, 3/3.5 and FLUX.1 pipelines as ugd backbones."""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .backbone import StableDiffusionBackbone, StableDiffusionXLBackbone, TextCondition
    from .flow import FluxBackbone, StableDiffusion3Backbone

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["StableDiffusionBackbone", "StableDiffusionXLBackbone", "TextCondition"], "backbone"),
    **dict.fromkeys(["StableDiffusion3Backbone", "FluxBackbone"], "flow"),
})

__all__ = ["StableDiffusionBackbone", "StableDiffusionXLBackbone", "TextCondition", "StableDiffusion3Backbone", "FluxBackbone"]
