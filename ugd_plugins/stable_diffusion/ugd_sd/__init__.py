"""ugd-sd: Stable Diffusion 1.x, 2.x (v-prediction) and XL pipelines as ugd backbones."""

from .backbone import StableDiffusionBackbone, StableDiffusionXLBackbone, TextCondition

__all__ = ["StableDiffusionBackbone", "StableDiffusionXLBackbone", "TextCondition"]
