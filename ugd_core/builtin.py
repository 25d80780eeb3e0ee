"""ugd's own plugin: registers the method presets (``presets.PRESETS``) and the generic diffusers
pixel backbone through the same hooks as any third-party plugin."""

from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl, register_preset_table
from .params import Param
from .presets import PRESETS


# Memory knobs on top of the default preset (auto): checkpointing and slicing change where
# activations live, not the result beyond rounding; tiling blends overlapping tiles, and only for
# images larger than the VAE's own sample size. Any preset takes them too:
# `--set grad_checkpointing=true --set vae_slicing=true` (see docs/backbones/stable-diffusion.md).
LOW_MEMORY = {
    "low-memory": (
        "The default (auto) with the memory knobs on: checkpointed denoiser and VAE decoder in guided passes, "
        "sliced and tiled VAE decode; pair with --dtype fp16/bf16 on GPUs",
        dict(PRESETS["auto"][1], grad_checkpointing=True, vae_slicing=True, vae_tiling=True),
        "Bansal et al. 2023, Algorithm 1; diffusers enable_gradient_checkpointing / enable_slicing / enable_tiling",
    ),
}


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    register_preset_table(register, PRESETS)
    register_preset_table(register, LOW_MEMORY)


def _diffusers_pixel(model: str, device: str = "cpu") -> Any:
    from .backbones import DiffusersPixelBackbone

    return DiffusersPixelBackbone.from_pretrained(model, device=device)


def _diffusers_pixel_classes(model: str) -> int | None:
    """A class-conditional UNet (``num_class_embeds`` in its config.json) takes its class index as the prompt, the
    others no text; from the config alone (no weights, no torch). None where the config cannot be read here or its
    count is no whole number: loading the model then says why."""
    from .class_prompt import is_count
    from .unet_files import unet_config

    config = unet_config(model)
    if config is None:
        return None
    count = config.get("num_class_embeds")
    if count is None:
        return 0
    return count if is_count(count) else None


@hookimpl
def ugd_register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "diffusers-pixel",
        _diffusers_pixel,
        description="Any diffusers pixel-space UNet2DModel (DDPM/DDIM pipeline folder or Hub id), e.g. an ImageNet model",
        params=[Param("model", "str", required=True, help="pipeline / UNet folder or Hugging Face id", example="google/ddpm-cifar10-32")],
        classes=_diffusers_pixel_classes,
    )
