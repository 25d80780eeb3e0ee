"""Registers the ``segmentation`` and ``seg-inpaint`` guides and the paper's segmentation presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion"
ARCH_CHOICES = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large")

# The official segmentation loss is the same per-pixel CE averaged over pixels, so its
# --optim_guidance_3_wt carries over unchanged.
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-segmentation": (
        "Stable Diffusion + segmentation map: 500 DDIM steps, CFG 2.0, forward s=400, recurrence k=10, no backward",
        dict(num_steps=500, cfg_scale=2.0, forward_strength=400.0, forward_schedule="sqrt_1m_abar", recurrence=10),
        f"{REPO} README 'Segmentation': --scale 2.0 --optim_guidance_3 --optim_num_steps 10 --optim_guidance_3_wt 400 "
        "--ddim_steps 500 (the official network is LR-ASPP MobileNetV3: arch=lraspp_mobilenet_v3_large)",
    ),
    "sd-segmentation-fast": (
        "Quick sd-segmentation: 50 DDIM steps, recurrence 3 (not tuned; for previews)",
        dict(num_steps=50, cfg_scale=2.0, forward_strength=400.0, forward_schedule="sqrt_1m_abar", recurrence=3),
        f"derived from sd-segmentation ({REPO}); reduced here, not in the paper",
    ),
    "imagenet-inpaint": (
        "ImageNet 256 segmentation-guided inpainting (use with segmentation:ref=IMG and seg-inpaint:image=IMG): 1000 DDIM steps, "
        "forward s=2, one Adam backward step lr 0.01, clipped x0. Values are the script's argparse defaults; the README "
        "gives no command for this experiment, so they are NOT confirmed as the paper's",
        dict(
            num_steps=1000,
            cfg_scale=1.0,
            forward_strength=2.0,
            forward_schedule="sqrt_1m_abar",
            backward_steps=1,
            backward_lr=0.01,
            backward_optimizer="adam",
            recurrence=1,
            clip_x0=True,
        ),
        f"{REPO} Guided_Diffusion_Imagenet/Guided/Segmentation_guided_inpainting.py (defaults: --optim_guidance_3_wt 2.0, "
        "--optim_lr 1e-2, --optim_max_iters 1, --optim_num_steps 1); run values unconfirmed",
    ),
    "imagenet-inpaint-fast": (
        "Quick imagenet-inpaint: 50 DDIM steps, recurrence 2 (not tuned; for previews)",
        dict(
            num_steps=50,
            cfg_scale=1.0,
            forward_strength=2.0,
            forward_schedule="sqrt_1m_abar",
            backward_steps=1,
            backward_lr=0.01,
            backward_optimizer="adam",
            recurrence=2,
            clip_x0=True,
        ),
        f"derived from imagenet-inpaint ({REPO}); reduced here, not in the paper",
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
    register_preset_table(register, PRESETS)
