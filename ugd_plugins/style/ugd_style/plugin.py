"""Registers the ``style`` guide and the paper's style presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion"
DEFAULT_LAYERS = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"

# The official style loss is CLIP's -logit_scale * cos (logit_scale = 100); with style:variant=clip
# (1 - cos) its --optim_guidance_3_wt 6 is 600 here. For variant=gram the strength needs retuning.
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-style": (
        "Stable Diffusion + style image (use style:variant=clip): 500 DDIM steps, CFG 3.0, forward s=6 in the official "
        "-100*cos units (600 here for 1 - cos), recurrence k=6, no backward",
        dict(num_steps=500, cfg_scale=3.0, forward_strength=600.0, forward_schedule="sqrt_1m_abar", recurrence=6),
        f"{REPO} README 'Style Transfer': --scale 3.0 --optim_num_steps 6 --optim_guidance_3_wt 6 --ddim_steps 500; "
        "scripts/style_transfer.py (CLIP RN50 image features, loss -100 * cos)",
    ),
    "sd-style-fast": (
        "Quick sd-style: 50 DDIM steps, recurrence 2 (not tuned; for previews)",
        dict(num_steps=50, cfg_scale=3.0, forward_strength=600.0, forward_schedule="sqrt_1m_abar", recurrence=2),
        f"derived from sd-style ({REPO}); reduced here, not in the paper",
    ),
}


def _build(**kwargs: Any) -> Any:
    from .guide import build_style_guide

    return build_style_guide(**kwargs)


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    register(
        "style",
        _build,
        description="Style of a reference image: VGG Gram-matrix loss (variant=gram) or CLIP image-embedding 1 - cos (variant=clip)",
        params=[
            Param("image", "path", required=True, help="style reference image"),
            Param("variant", "str", "gram", "gram = VGG Gram matrices; clip = CLIP image embedding (the official code)", choices=("gram", "clip")),
            Param("arch", "str", "vgg16", "VGG for variant=gram", choices=("vgg16", "vgg19")),
            Param("layers", "str", DEFAULT_LAYERS, "VGG layers whose Gram matrices are matched (quote commas, or use ';')"),
            Param("weights", "path", "", "VGG state dict (default: torchvision's cache)"),
            Param("size", "int", 256, "resize the images to size x size before VGG (0 = keep)"),
            Param("model", "str", "", "CLIP model for variant=clip (default openai/clip-vit-base-patch16)"),
        ],
        differentiable=True,
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    register_preset_table(register, PRESETS)
