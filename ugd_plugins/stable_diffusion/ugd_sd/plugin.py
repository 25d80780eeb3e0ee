"""Registers the ``stable-diffusion``, ``stable-diffusion-xl``, ``stable-diffusion-3`` and ``flux`` backbones (nothing heavy is imported here:
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


def _flow(model: str, height: int = 0, width: int = 0, device: str = "cpu", kind: str = "flux", guidance: float = 3.5,
          t5: bool = True, max_sequence_length: int = 0) -> Any:
    from .flow import FluxBackbone, StableDiffusion3Backbone

    sizes = dict(height=height or None, width=width or None, device=device, max_sequence_length=max_sequence_length or None)
    if kind == "flux":
        return FluxBackbone.from_pretrained(model, guidance=guidance, **sizes)
    return StableDiffusion3Backbone.from_pretrained(model, t5=t5, **sizes)


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
        example="--prompt 'a photo of a cat'",
        reads=("prompt", "negative_prompt"),
    )
    register(
        "stable-diffusion-xl",
        partial(_stable_diffusion, xl=True),
        description="Stable Diffusion XL (two text encoders, pooled embeddings, size conditioning; 1024 px by default)",
        params=_params("stabilityai/stable-diffusion-xl-base-1.0"),
        example="--prompt 'a photo of a cat'",
        reads=("prompt", "negative_prompt"),
    )
    register(
        "stable-diffusion-3",
        partial(_flow, kind="sd3"),
        description="Stable Diffusion 3/3.5 (rectified-flow MMDiT as an eps backbone; three text encoders, T5 optional; "
        "classifier-free guidance in one batched pass)",
        params=[*_params("stabilityai/stable-diffusion-3.5-medium"),
                Param("t5", "bool", True, "load the T5 text encoder (false: zeros in its place, as diffusers)"),
                Param("max_sequence_length", "int", 0, "T5 tokens (0 = the pipeline's default, 256)")],
        example="--prompt 'a photo of a cat'",
        reads=("prompt", "negative_prompt"),
    )
    register(
        "flux",
        partial(_flow, kind="flux"),
        description="FLUX.1 dev/schnell (rectified-flow transformer as an eps backbone; packed latents, shift mu from "
        "the image size; dev's distilled guidance embedding instead of a CFG batch)",
        params=[*_params("black-forest-labs/FLUX.1-dev"),
                Param("guidance", "float", 3.5, "FLUX.1-dev's guidance embedding (schnell has none; cfg_scale is not used)"),
                Param("max_sequence_length", "int", 0, "T5 tokens (0 = the pipeline's default, 512)")],
        example="--prompt 'a photo of a cat'",
        reads=("prompt",),  # no CFG batch: a negative prompt would be ignored
    )
