"""Registers the ``style`` guide and the paper's style presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

# The official code, github.com/arpitbansal297/Universal-Guided-Diffusion at this commit; every value below
# cites a file:line of it, or says it is not in the official code. SD = stable-diffusion-guided/.
REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion/tree/ff82f88072b7f53884c32fc65755fe223e09d291"
DEFAULT_LAYERS = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"

# The official style loss is -100 cos between OpenAI CLIP RN50 image embeddings (SD scripts/style_transfer.py:170-178), so
# with style:variant=clip (1 - cos) its --optim_forward_guidance_wt s is 100 s here; variant=gram needs its own strength.
# The step is universal guidance's eps += s sqrt(1 - a_t) grad (SD ldm/models/diffusion/ddim_with_grad.py:165-168):
# forward_schedule sqrt_1m_abar, the step on eps (forward_on's default).
SD_STYLE: dict[str, Any] = dict(
    num_steps=500,  # README.md:100-101 --ddim_steps 500
    eta=0.0,  # SD scripts/style_transfer.py:244 default --ddim_eta 0.0
    cfg_scale=3.0,  # README.md:100-101 --scale 3.0
    forward_strength=600.0,  # README.md:100-101 --optim_forward_guidance_wt 6, in -100 cos units
    forward_schedule="sqrt_1m_abar",  # SD ddim_with_grad.py:168
    recurrence=6,  # README.md:100-101 --optim_num_steps 6 (ddim_with_grad.py:120,127)
)  # no backward step: the SD sampler has none (ddim_with_grad.py:59-223)
FAST = "fewer steps for previews: not in the official code, not tuned"

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-style": (
        "Stable Diffusion + style image (use style:variant=clip): 500 DDIM steps, CFG 3.0, forward s=6 in the official "
        "-100 cos units (600 here for 1 - cos), recurrence k=6, no backward step",
        SD_STYLE,
        f"{REPO} README.md:100-101 (scripts/style_transfer.py --scale 3.0 --optim_forward_guidance --optim_num_steps 6 "
        "--optim_forward_guidance_wt 6 --ddim_steps 500); stable-diffusion-guided/scripts/style_transfer.py:170-178,244,369-387",
    ),
    "sd-style-fast": (
        f"Quick sd-style: 50 DDIM steps, recurrence 2 ({FAST})",
        dict(SD_STYLE, num_steps=50, recurrence=2),
        f"sd-style ({REPO}) with num_steps and recurrence changed: {FAST}",
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
        example="--backbone stable-diffusion --prompt 'a house' --guide style:image=style.jpg,variant=clip --preset sd-style-fast",
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
    register_preset_table(register, PRESETS, examples="--backbone stable-diffusion --prompt 'a house' --guide style:image=style.jpg,variant=clip")
