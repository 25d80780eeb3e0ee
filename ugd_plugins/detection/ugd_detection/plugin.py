"""Registers the ``detection`` guide and the paper's object-location presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion"
ARCH_CHOICES = ("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn")

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-detection": (
        "Stable Diffusion + object location (Faster R-CNN loss): 500 DDIM steps, CFG 7.5, forward s=5, recurrence 1. "
        "NOT confirmed: the README gives no detection command; s, k and CFG are scripts/object_detection.py's argparse "
        "defaults and the step count follows the other SD experiments",
        dict(num_steps=500, cfg_scale=7.5, forward_strength=5.0, forward_schedule="sqrt_1m_abar", recurrence=1),
        f"{REPO} stable-diffusion-guided/scripts/object_detection.py (defaults --optim_guidance_3_wt 5.0, --scale 7.5, "
        "--optim_num_steps 1; loss_classifier + loss_objectness + loss_rpn_box_reg of fasterrcnn_resnet50_fpn_v2)",
    ),
    "sd-detection-fast": (
        "Quick sd-detection: 50 DDIM steps (not tuned; for previews)",
        dict(num_steps=50, cfg_scale=7.5, forward_strength=5.0, forward_schedule="sqrt_1m_abar", recurrence=1),
        f"derived from sd-detection ({REPO}); reduced here, not in the paper",
    ),
    "imagenet-detection": (
        "ImageNet 256 + object location (boxes of a reference image, detection:ref=IMG): 1000 DDIM steps, forward s=2, "
        "one Adam backward step lr 0.001, clipped x0. NOT confirmed: argparse defaults of the official script",
        dict(
            num_steps=1000,
            cfg_scale=1.0,
            forward_strength=2.0,
            forward_schedule="sqrt_1m_abar",
            backward_steps=1,
            backward_lr=0.001,
            backward_optimizer="adam",
            recurrence=1,
            clip_x0=True,
        ),
        f"{REPO} Guided_Diffusion_Imagenet/Guided/Object_detection.py (defaults --optim_guidance_3_wt 2.0, --optim_lr 1e-3, "
        "--optim_max_iters 1, --optim_num_steps 1); run values unconfirmed",
    ),
    "imagenet-detection-fast": (
        "Quick imagenet-detection: 50 DDIM steps, recurrence 2 (not tuned; for previews)",
        dict(
            num_steps=50,
            cfg_scale=1.0,
            forward_strength=2.0,
            forward_schedule="sqrt_1m_abar",
            backward_steps=1,
            backward_lr=0.001,
            backward_optimizer="adam",
            recurrence=2,
            clip_x0=True,
        ),
        f"derived from imagenet-detection ({REPO}); reduced here, not in the paper",
    ),
}


def _build(**kwargs: Any) -> Any:
    from .guide import build_detection_guide

    return build_detection_guide(**kwargs)


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    register(
        "detection",
        _build,
        description="Object location: a detector's own training loss (Faster R-CNN or YOLO) against target boxes and labels",
        params=[
            Param("boxes", "str", "", 'target boxes "x0,y0,x1,y1;..." (quote it): fractions if all <= 1, else pixels'),
            Param("labels", "str", "", 'one COCO class name or index per box, "dog;person"'),
            Param("targets", "path", "", 'JSON file: a list of {"box": (x0, y0, x1, y1), "label": "dog"} items'),
            Param("ref", "path", "", "reference image: the detector's confident boxes on it are the target (torchvision)"),
            Param("ref_score", "float", 0.9, "score threshold for ref= boxes (the official code's box_score_thresh)"),
            Param("backend", "str", "torchvision", "detector family", choices=("torchvision", "yolo")),
            Param("arch", "str", ARCH_CHOICES[0], "torchvision Faster R-CNN variant", choices=ARCH_CHOICES),
            Param("weights", "path", "", "state dict (torchvision) or .pt (yolo; default yolov8n.pt); default: the standard cache"),
            Param("size", "int", 0, "torchvision: detector min_size (0 = 800); yolo: input size (0 = 640)"),
            Param("terms", "str", "all", "torchvision loss terms: all (RPN + ROI) or official (without ROI box regression)", choices=("all", "official")),
            Param("seed", "int", 0, "seed of the detector's proposal sampling in train mode"),
        ],
        differentiable=True,
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    register_preset_table(register, PRESETS)
