"""Registers the ``detection`` guide and the paper's object-location presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

# The official code, github.com/arpitbansal297/Universal-Guided-Diffusion at this commit; every value below
# cites a file:line of it, or says it is not in the official code. SD = stable-diffusion-guided/,
# IN = Guided_Diffusion_Imagenet/.
REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion/tree/ff82f88072b7f53884c32fc65755fe223e09d291"
ARCH_CHOICES = ("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn")
ADM = "--backbone adm:model=PATH/256x256_diffusion_uncond.pt"

# The official loss is Faster R-CNN v2's loss_classifier + loss_objectness + loss_rpn_box_reg (SD scripts/object_detection.py:128,
# IN Guided/Object_detection.py:123): detection:terms=official gives the same units. Its step is universal guidance's
# eps += s sqrt(1 - a_t) grad (forward_on's default), forward_schedule sqrt_1m_abar.
SD_DETECTION: dict[str, Any] = dict(
    num_steps=250,  # README.md:82-83 --ddim_steps 250
    eta=0.0,  # SD scripts/object_detection.py:174 default --ddim_eta 0.0
    cfg_scale=1.5,  # README.md:82-83 --scale 1.5
    forward_strength=100.0,  # README.md:82-83 --optim_forward_guidance_wt 100
    forward_schedule="sqrt_1m_abar",  # SD ldm/models/diffusion/ddim_with_grad.py:336-339
    recurrence=5,  # README.md:82-83 --optim_num_steps 5 (ddim_with_grad.py:286,298)
)  # no backward step: the SD sampler has none (ddim_with_grad.py:226-395)
IMAGENET_DETECTION: dict[str, Any] = dict(
    num_steps=1000,  # IN guided_diffusion/script_util.py:17,19: diffusion_steps 1000, no respacing (README gives no command)
    eta=0.0,  # IN gaussian_diffusion.py:808-817: sigma = 0 (the script sets no sampling_type)
    cfg_scale=1.0,  # unconditional model
    forward_strength=2.0,  # Guided/Object_detection.py:71 default --optim_forward_guidance_wt 2.0
    forward_schedule="sqrt_1m_abar",  # IN gaussian_diffusion.py:686-689
    backward_steps=1,  # Guided/Object_detection.py:67 default --optim_backward_guidance_max_iters 1
    backward_lr=0.001,  # Guided/Object_detection.py:66 default --optim_lr 1e-3
    backward_optimizer="adam",  # Guided/Object_detection.py:142; IN gaussian_diffusion.py:729-731
    recurrence=1,  # Guided/Object_detection.py:76 default --optim_num_steps [1]
    clip_x0=True,  # IN gaussian_diffusion.py:744: the backward iterate is clamped to [-1, 1] before each step
)
FAST = "fewer steps for previews: not in the official code, not tuned"
BOXES = "'detection:boxes=\"0.2,0.3,0.7,0.9\",labels=dog'"  # an example target: one dog in the lower middle

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-detection": (
        "Stable Diffusion + object location (Faster R-CNN loss; detection:terms=official for the official units): "
        "250 DDIM steps, CFG 1.5, forward s=100, recurrence k=5, no backward step. Not reproduced: the official "
        "sampler takes the guide's gradient through the unconditional eps and adds CFG afterwards "
        "(ddim_with_grad.py:309-310,339); ugd differentiates the CFG eps",
        SD_DETECTION,
        f"{REPO} README.md:82-83 (scripts/object_detection.py --scale 1.5 --optim_forward_guidance --optim_num_steps 5 "
        "--optim_forward_guidance_wt 100 --ddim_steps 250); stable-diffusion-guided/scripts/object_detection.py:98-128,324-362; "
        "stable-diffusion-guided/ldm/models/diffusion/ddim_with_grad.py:226-392",
    ),
    "sd-detection-fast": (
        f"Quick sd-detection: 50 DDIM steps, recurrence 2 ({FAST})",
        dict(SD_DETECTION, num_steps=50, recurrence=2),
        f"sd-detection ({REPO}) with num_steps and recurrence changed: {FAST}",
    ),
    "imagenet-detection": (
        f"ImageNet 256 + object location ({ADM}; the boxes of a reference image, detection:ref=IMG): 1000 DDIM steps, "
        "forward s=2, one Adam backward step lr 0.001 on a clamped x0. These are the script's argparse defaults: the "
        "README gives no command, so no run confirms them",
        IMAGENET_DETECTION,
        f"{REPO} Guided_Diffusion_Imagenet/Guided/Object_detection.py:66-79,93-158; "
        "Guided_Diffusion_Imagenet/guided_diffusion/gaussian_diffusion.py:626-689,729-804; Guided_Diffusion_Imagenet/guided_diffusion/script_util.py:17,19",
    ),
    "imagenet-detection-fast": (
        f"Quick imagenet-detection ({ADM}): 50 DDIM steps, recurrence 2 ({FAST})",
        dict(IMAGENET_DETECTION, num_steps=50, recurrence=2),
        f"imagenet-detection ({REPO}) with num_steps and recurrence changed: {FAST}",
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
        example=f"--backbone stable-diffusion --prompt 'a dog on a beach' --guide {BOXES} --preset sd-detection-fast",
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
    sd = f"--backbone stable-diffusion --prompt 'a dog on a beach' --guide {BOXES}"
    examples = {name: "--backbone adm --guide detection:ref=dog.jpg" if name.startswith("imagenet") else sd for name in PRESETS}
    register_preset_table(register, PRESETS, examples)
