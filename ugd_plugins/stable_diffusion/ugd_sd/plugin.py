"""Registers the ``stable-diffusion`` and ``stable-diffusion-xl`` backbones (nothing heavy is imported here:
diffusers loads when a backbone is built)."""

from __future__ import annotations

from functools import partial
from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param


def _stable_diffusion(model: str, height: int = 0, width: int = 0, device: str = "cpu", xl: bool = False) -> Any:
    from .backbone import StableDiffusionBackbone, StableDiffusionXLBackbone

    cls = StableDiffusionXLBackbone if xl else StableDiffusionBackbone
    return cls.from_pretrained(model, height=height or None, width=width or None, device=device)


def _params(default_model: str) -> list[Param]:
    return [
        Param("model", "str", default_model, "pipeline folder or Hugging Face id"),
        Param("height", "int", 0, "image height in pixels (0 = the model's default)"),
        Param("width", "int", 0, "image width in pixels (0 = the model's default)"),
    ]


@hookimpl
def ugd_register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "stable-diffusion",
        _stable_diffusion,
        description="Stable Diffusion 1.x/2.x/XL (latent, text, classifier-free guidance, differentiable VAE decode); "
        "the pipeline class is read from the folder's model_index.json",
        params=_params("stable-diffusion-v1-5/stable-diffusion-v1-5"),
    )
    register(
        "stable-diffusion-xl",
        partial(_stable_diffusion, xl=True),
        description="Stable Diffusion XL (two text encoders, pooled embeddings, size conditioning; 1024 px by default)",
        params=_params("stabilityai/stable-diffusion-xl-base-1.0"),
    )
