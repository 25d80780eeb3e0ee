"""ugd's own plugin: registers the method presets (``presets.PRESETS``) and the
generic diffusers backbones through the same hooks as any third-party plugin."""

from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl
from .params import Param
from .presets import PRESETS
from .registry import register_preset_table


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    register_preset_table(register, PRESETS)


def _diffusers_pixel(model: str, device: str = "cpu") -> Any:
    from .backbones import DiffusersPixelBackbone

    return DiffusersPixelBackbone.from_pretrained(model, device=device)


def _stable_diffusion(model: str, height: int = 0, width: int = 0, device: str = "cpu") -> Any:
    from .backbones import StableDiffusionBackbone

    return StableDiffusionBackbone.from_pretrained(model, height=height or None, width=width or None, device=device)


@hookimpl
def ugd_register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "diffusers-pixel",
        _diffusers_pixel,
        description="Any diffusers pixel-space UNet2DModel (DDPM/DDIM pipeline folder or Hub id), e.g. an ImageNet model",
        params=[Param("model", "str", required=True, help="pipeline / UNet folder or Hugging Face id")],
    )
    register(
        "stable-diffusion",
        _stable_diffusion,
        description="Stable Diffusion 1.x/2.x (latent, text, classifier-free guidance, differentiable VAE decode)",
        params=[
            Param("model", "str", "runwayml/stable-diffusion-v1-5", "pipeline folder or Hugging Face id"),
            Param("height", "int", 0, "image height in pixels (0 = the model's default)"),
            Param("width", "int", 0, "image width in pixels (0 = the model's default)"),
        ],
    )
