"""Registers the ``clip`` guide and the paper's CLIP presets (nothing heavy is imported here)."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

# The official code, github.com/arpitbansal297/Universal-Guided-Diffusion at this commit; every value below
# cites a file:line of it, or says it is not in the official code. SD = stable-diffusion-guided/,
# IN = Guided_Diffusion_Imagenet/.
REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion/tree/ff82f88072b7f53884c32fc65755fe223e09d291"
DEFAULT_MODEL = "openai/clip-vit-base-patch16"  # keep in step with guide.DEFAULT_MODEL
ADM = "--backbone adm:model=PATH/256x256_diffusion_uncond.pt"

# Strengths are in units of this guide's loss, 1 - cos. The official CLIP loss is -logits_per_image
# = -100 cos (OpenAI CLIP RN50, logit scale 100: SD scripts/clip_guided.py:185, IN Guided/Clip_guided.py:101),
# so an official --optim_forward_guidance_wt s is 100 s here. The official step is universal guidance's
# eps += s sqrt(1 - a_t) grad (SD ldm/models/diffusion/ddpm.py:741-746, IN guided_diffusion/gaussian_diffusion.py:683-689):
# forward_schedule sqrt_1m_abar with the step on eps (forward_on's default).
SD_CLIP: dict[str, Any] = dict(
    num_steps=1000,  # SD ldm/models/diffusion/ddpm.py:679-687: operation_diffusion visits all 1000 DDPM timesteps
    eta=0.0,  # SD ddpm.py:843-851: deterministic DDIM update (x0, eps) -> t-1
    cfg_scale=1.0,  # SD scripts/clip_guided.py:405-406: conditioned on "" only, no CFG in ddpm.py:715
    forward_strength=500.0,  # SD scripts/clip_guided.py:340 default --optim_forward_guidance_wt 5.0 (README has no SD CLIP command)
    forward_schedule="sqrt_1m_abar",  # SD ddpm.py:743-746
    recurrence=1,  # SD scripts/clip_guided.py:347 default --optim_num_steps [1]
)  # backward off: --optim_backward_guidance is store_true, default False (SD scripts/clip_guided.py:338)
IMAGENET_CLIP: dict[str, Any] = dict(
    num_steps=1000,  # README.md:116 --diffusion_steps 1000, no --timestep_respacing (IN guided_diffusion/script_util.py:19)
    eta=0.0,  # IN gaussian_diffusion.py:808-817: sigma = 0 unless --optim_sampling_type
    cfg_scale=1.0,  # unconditional model (README.md:116 --class_cond False)
    forward_strength=200.0,  # README.md:116,118 --optim_forward_guidance_wt 2.0 (README.md:117: 5.0 with k=5)
    forward_schedule="sqrt_1m_abar",  # IN gaussian_diffusion.py:686-689
    recurrence=10,  # README.md:116,118 --optim_num_steps 10
    clip_x0=False,  # IN gaussian_diffusion.py:665: the forward pass's clamp is not in place, the guide sees the raw x0
)  # backward off: IN Guided/Clip_guided.py:53 default --optim_backward_guidance_max_iters 0, not set in README.md:116-118
FAST = "fewer steps for previews: not in the official code, not tuned"

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "imagenet-clip": (
        f"ImageNet 256 unconditional ({ADM}) + CLIP text: 1000 DDIM steps, forward s=2 in the official -100 cos "
        "units (200 here), recurrence k=10, no backward step (README.md:117's other setting: s=5, k=5). Not reproduced: "
        "the official DDIM update clamps x0 to [-1, 1] (gaussian_diffusion.py:795), and its CLIP input uses ImageNet "
        "mean/std (Clip_guided.py:92-97)",
        IMAGENET_CLIP,
        f"{REPO} README.md:116,118 (Clip_guided.py --optim_forward_guidance_wt 2.0 --optim_num_steps 10 --diffusion_steps 1000); "
        "Guided_Diffusion_Imagenet/Guided/Clip_guided.py:53,101; Guided_Diffusion_Imagenet/guided_diffusion/gaussian_diffusion.py:626-689,795,808-833",
    ),
    "imagenet-clip-fast": (
        f"Quick imagenet-clip ({ADM}): 50 DDIM steps, recurrence 3 ({FAST})",
        dict(IMAGENET_CLIP, num_steps=50, recurrence=3),
        f"imagenet-clip ({REPO}) with num_steps and recurrence changed: {FAST}",
    ),
    "sd-clip": (
        "Stable Diffusion + CLIP text guidance, SD conditioned on the empty prompt (no CFG): 1000 DDIM steps (every "
        "DDPM timestep), forward s=5 in the official -100 cos units (500 here), no recurrence, no backward step. "
        "s and k are the script's argparse defaults: the README gives no SD CLIP command. Not reproduced: the official "
        "loop re-noises z_(t-1) back to level t after every step (ddpm.py:855-858), and its CLIP input uses ImageNet "
        "mean/std (scripts/clip_guided.py:176-181)",
        SD_CLIP,
        f"{REPO} stable-diffusion-guided/scripts/clip_guided.py:185,338,340,347,405-409; "
        "stable-diffusion-guided/ldm/models/diffusion/ddpm.py:679-687,741-746,843-858",
    ),
    "sd-clip-fast": (
        f"Quick sd-clip: 50 DDIM steps ({FAST})",
        dict(SD_CLIP, num_steps=50),
        f"sd-clip ({REPO}) with num_steps changed: {FAST}",
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
        example="--backbone stable-diffusion --guide 'clip:prompt=a photo of a dog' --preset sd-clip-fast",
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
    examples = {name: f"--backbone {'adm' if name.startswith('imagenet') else 'stable-diffusion'} --guide 'clip:prompt=a photo of a dog'"
                for name in PRESETS}
    register_preset_table(register, PRESETS, examples)
