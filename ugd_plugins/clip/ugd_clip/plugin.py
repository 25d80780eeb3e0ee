"""Registers the ``clip`` guide and the paper's CLIP presets (nothing heavy is imported here)."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion"
DEFAULT_MODEL = "openai/clip-vit-base-patch16"  # keep in step with guide.DEFAULT_MODEL

# Strengths are in units of this guide's loss, 1 - cos. The official code's CLIP loss is
# -logit_scale * cos with logit_scale = 100, so its --optim_guidance_3_wt s is 100 * s here.
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "imagenet-clip": (
        "ImageNet 256 unconditional + CLIP text: 1000 DDIM steps, forward s=2 (official units; 200 here), "
        "recurrence k=10, one Adam backward step (lr 0.01) on a clipped x0. Official README also uses s=5, k=5.",
        dict(
            num_steps=1000,
            cfg_scale=1.0,
            forward_strength=200.0,
            forward_schedule="sqrt_1m_abar",
            backward_steps=1,
            backward_lr=0.01,
            backward_optimizer="adam",
            recurrence=10,
            clip_x0=True,
        ),
        f"{REPO} README (ImageNet 'Clip guided': --optim_guidance_3_wt 2.0 --optim_num_steps 10, diffusion_steps 1000); "
        "Guided_Diffusion_Imagenet/guided_diffusion/gaussian_diffusion.py (Adam x0 step, optim_lr 1e-2, max_iters 1)",
    ),
    "imagenet-clip-fast": (
        "Quick imagenet-clip: 50 DDIM steps, recurrence 3, same strength (not tuned; for previews)",
        dict(
            num_steps=50,
            cfg_scale=1.0,
            forward_strength=200.0,
            forward_schedule="sqrt_1m_abar",
            backward_steps=1,
            backward_lr=0.01,
            backward_optimizer="adam",
            recurrence=3,
            clip_x0=True,
        ),
        f"derived from imagenet-clip ({REPO}); step count and recurrence reduced here, not in the paper",
    ),
    "sd-clip": (
        "Stable Diffusion + CLIP text guidance (SD conditioned on the empty prompt, so no CFG): 500 DDIM steps, "
        "forward s=5 (official default; 500 here), recurrence 4. Steps and recurrence are NOT confirmed by the "
        "official README (it gives no SD CLIP command); treat them as a starting point.",
        dict(num_steps=500, cfg_scale=1.0, forward_strength=500.0, forward_schedule="sqrt_1m_abar", recurrence=4),
        f"{REPO} stable-diffusion-guided/scripts/clip_guided.py (argparse default --optim_forward_guidance_wt 5.0; "
        "conditioning on ''); steps/recurrence unconfirmed",
    ),
    "sd-clip-fast": (
        "Quick sd-clip: 50 DDIM steps, recurrence 2 (not tuned; for previews)",
        dict(num_steps=50, cfg_scale=1.0, forward_strength=500.0, forward_schedule="sqrt_1m_abar", recurrence=2),
        f"derived from sd-clip ({REPO}); reduced here, not in the paper",
    ),
}


def _build(**kwargs: Any) -> Any:
    from .guide import build_clip_guide

    return build_clip_guide(**kwargs)


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    register(
        "clip",
        _build,
        description="CLIP guidance: 1 - cos between the image's CLIP embedding and a prompt's or a reference image's",
        params=[
            Param("prompt", "str", "", "text the image should match (give prompt or image)"),
            Param("image", "path", "", "reference image whose CLIP embedding the image should match"),
            Param("model", "str", DEFAULT_MODEL, "Hugging Face id or local folder of a CLIPModel"),
        ],
        differentiable=True,
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    register_preset_table(register, PRESETS)
