"""Registers the ``segmentation`` and ``seg-inpaint`` guides and the paper's segmentation presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

# The official code, github.com/arpitbansal297/Universal-Guided-Diffusion at this commit; every value below
# cites a file:line of it, or says it is not in the official code. SD = stable-diffusion-guided/,
# IN = Guided_Diffusion_Imagenet/.
REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion/tree/ff82f88072b7f53884c32fc65755fe223e09d291"
ARCH_CHOICES = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large")
ADM = "--backbone adm:model=PATH/256x256_diffusion_uncond.pt"

# The official segmentation loss is the same per-pixel CE (ignore 255) averaged over pixels (SD scripts/segmentation.py:219-224,
# IN Guided/Segmentation_guided_inpainting.py:148-153), so its --optim_forward_guidance_wt carries over unchanged. Its step
# is universal guidance's eps += s sqrt(1 - a_t) grad (SD ldm/models/diffusion/ddim_with_grad.py:165-168): forward_schedule
# sqrt_1m_abar with the step on eps (forward_on's default). Its network is LR-ASPP MobileNetV3-Large at 520 x 520
# (SD scripts/segmentation.py:202,228-229): segmentation:arch=lraspp_mobilenet_v3_large.
SD_SEGMENTATION: dict[str, Any] = dict(
    num_steps=500,  # README.md:67-68 --ddim_steps 500
    eta=0.0,  # SD scripts/segmentation.py:320 default --ddim_eta 0.0
    cfg_scale=2.0,  # README.md:68 --scale 2.0 ("as an oil painting"; README.md:67 uses 1.5)
    forward_strength=400.0,  # README.md:67-68 --optim_forward_guidance_wt 400
    forward_schedule="sqrt_1m_abar",  # SD ddim_with_grad.py:168
    recurrence=10,  # README.md:67-68 --optim_num_steps 10 (ddim_with_grad.py:120,127)
)  # no backward step: the SD sampler has none (ddim_with_grad.py:59-223)
IMAGENET_INPAINT: dict[str, Any] = dict(
    num_steps=1000,  # IN guided_diffusion/script_util.py:17,19: diffusion_steps 1000, no respacing (README gives no command)
    eta=0.0,  # IN gaussian_diffusion.py:808-817 with Guided/Segmentation_guided_inpainting.py:90 default --optim_sampling_type None
    cfg_scale=1.0,  # unconditional model
    forward_strength=2.0,  # Segmentation_guided_inpainting.py:85 default --optim_forward_guidance_wt 2.0
    forward_schedule="sqrt_1m_abar",  # IN gaussian_diffusion.py:686-689
    backward_steps=1,  # Segmentation_guided_inpainting.py:81 default --optim_backward_guidance_max_iters 1
    backward_lr=0.01,  # Segmentation_guided_inpainting.py:80 default --optim_lr 1e-2
    backward_optimizer="adam",  # Segmentation_guided_inpainting.py:167; IN gaussian_diffusion.py:729-731
    recurrence=1,  # Segmentation_guided_inpainting.py:91 default --optim_num_steps [1]
    clip_x0=True,  # IN gaussian_diffusion.py:744: the backward iterate is clamped to [-1, 1] before each step
)
FAST = "fewer steps for previews: not in the official code, not tuned"

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-segmentation": (
        "Stable Diffusion + segmentation map (segmentation:ref=IMG, as the official run): 500 DDIM steps, CFG 2.0, "
        "forward s=400, recurrence k=10, no backward step",
        SD_SEGMENTATION,
        f"{REPO} README.md:67-68 (scripts/segmentation.py --scale 2.0 [1.5 in :67] --optim_forward_guidance "
        "--optim_num_steps 10 --optim_forward_guidance_wt 400 --ddim_steps 500); stable-diffusion-guided/scripts/segmentation.py:202,219-230,449-460; "
        "stable-diffusion-guided/ldm/models/diffusion/ddim_with_grad.py:120-168,216 (LR-ASPP: arch=lraspp_mobilenet_v3_large)",
    ),
    "sd-segmentation-fast": (
        f"Quick sd-segmentation: 50 DDIM steps, recurrence 3 ({FAST})",
        dict(SD_SEGMENTATION, num_steps=50, recurrence=3),
        f"sd-segmentation ({REPO}) with num_steps and recurrence changed: {FAST}",
    ),
    "imagenet-inpaint": (
        f"ImageNet 256 segmentation-guided inpainting ({ADM}; segmentation:ref=IMG with seg-inpaint:image=IMG): "
        "1000 DDIM steps, forward s=2, one Adam backward step lr 0.01 on a clamped x0. These are the script's argparse "
        "defaults: the README gives no command, and the committed script reads arguments it does not define "
        "(Segmentation_guided_inpainting.py:178,181,182), so no run confirms them. Officially the forward step follows the "
        "segmentation CE and the backward step the masked MSE only (:165-172); here both guides drive both",
        IMAGENET_INPAINT,
        f"{REPO} Guided_Diffusion_Imagenet/Guided/Segmentation_guided_inpainting.py:80-91,137-172,320-330; "
        "Guided_Diffusion_Imagenet/guided_diffusion/gaussian_diffusion.py:626-689,729-804; Guided_Diffusion_Imagenet/guided_diffusion/script_util.py:17,19",
    ),
    "imagenet-inpaint-fast": (
        f"Quick imagenet-inpaint ({ADM}): 50 DDIM steps, recurrence 2 ({FAST})",
        dict(IMAGENET_INPAINT, num_steps=50, recurrence=2),
        f"imagenet-inpaint ({REPO}) with num_steps and recurrence changed: {FAST}",
    ),
}


def _segmentation(**kwargs: Any) -> Any:
    from .guide import build_segmentation_guide

    return build_segmentation_guide(**kwargs)


def _inpaint(**kwargs: Any) -> Any:
    from .guide import build_inpaint_guide

    return build_inpaint_guide(**kwargs)


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    register(
        "segmentation",
        _segmentation,
        example="--backbone stable-diffusion --prompt 'a dog' --guide segmentation:ref=dog.jpg --preset sd-segmentation-fast",
        description="Segmentation-map guidance: per-pixel cross-entropy of DeepLabV3 / LR-ASPP / YOLO-seg against a class map",
        params=[
            Param("target", "path", "", "class-index map: grayscale / palette PNG (255 = ignore) or VOC-coloured RGB"),
            Param("ref", "path", "", "reference image: the same network segments it and its argmax is the target"),
            Param("backend", "str", "torchvision", "segmentation network family", choices=("torchvision", "yolo")),
            Param("arch", "str", ARCH_CHOICES[0], "torchvision architecture (VOC classes)", choices=ARCH_CHOICES),
            Param("weights", "path", "", "state dict (torchvision) or .pt (yolo; default yolov8n-seg.pt); default: the standard cache"),
            Param("size", "int", 0, "network input size (0 = 520 for torchvision, 640 for yolo)"),
            Param("topk", "int", 100, "yolo: instances turned into the per-pixel class distribution"),
        ],
        differentiable=True,
    )
    register(
        "seg-inpaint",
        _inpaint,
        example="--backbone adm --guide segmentation:ref=dog.jpg --guide seg-inpaint:image=dog.jpg --preset imagenet-inpaint-fast",
        description="Masked reconstruction: mean squared error on the known pixels of a reference image",
        params=[
            Param("image", "path", required=True, help="reference image whose known pixels are kept"),
            Param("mask", "str", "background", "keep-mask image (white = known), or 'background' (segment image, keep class 0)"),
            Param("arch", "str", ARCH_CHOICES[0], "segmenter for mask=background", choices=ARCH_CHOICES),
            Param("weights", "path", "", "segmenter state dict for mask=background (default: torchvision's cache)"),
            Param("size", "int", 0, "segmenter input size for mask=background (0 = 520)"),
        ],
        differentiable=True,
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    inpaint = "--backbone adm --guide segmentation:ref=dog.jpg --guide seg-inpaint:image=dog.jpg"
    sd = "--backbone stable-diffusion --prompt 'a dog' --guide segmentation:ref=dog.jpg"
    register_preset_table(register, PRESETS, {name: inpaint if name.startswith("imagenet") else sd for name in PRESETS})
