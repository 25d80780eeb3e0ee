"""Registers the ``face`` guide and the paper's face-identity presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

# The official code, github.com/arpitbansal297/Universal-Guided-Diffusion at this commit; every value below
# cites a file:line of it, or says it is not in the official code. SD = stable-diffusion-guided/.
REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion/tree/ff82f88072b7f53884c32fc65755fe223e09d291"

# The official loss is mean |e - e_ref| of facenet-pytorch InceptionResnetV1 (VGGFace2) embeddings of MTCNN face crops
# (SD scripts/face_detection.py:167-245,252-254); face:loss=l1 has that form on ArcFace embeddings, so the strength is a
# starting point for ArcFace, not a confirmed value. The step is universal guidance's eps += s sqrt(1 - a_t) grad
# (SD ldm/models/diffusion/ddim_with_grad.py:165-168): forward_schedule sqrt_1m_abar, the step on eps (forward_on's default).
SD_FACE: dict[str, Any] = dict(
    num_steps=500,  # README.md:44-45 --ddim_steps 500
    eta=0.0,  # SD scripts/face_detection.py:298 default --ddim_eta 0.0
    cfg_scale=7.5,  # SD scripts/face_detection.py:328 default --scale 7.5 (README.md:44-45 pass none)
    forward_strength=20000.0,  # README.md:44-45 --optim_forward_guidance_wt 20000
    forward_schedule="sqrt_1m_abar",  # SD ddim_with_grad.py:168
    recurrence=2,  # README.md:44-45 --optim_num_steps 2 (ddim_with_grad.py:120,127)
)  # no backward step: the SD sampler has none (ddim_with_grad.py:59-223)
FAST = "fewer steps for previews: not in the official code, not tuned"

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-face": (
        "Stable Diffusion + face identity: 500 DDIM steps, CFG 7.5 (the script default; the README passes no --scale), "
        "forward s=20000, recurrence k=2, no backward step. s was set for the official loss, mean |e - e_ref| of "
        "FaceNet embeddings (face:loss=l1 has its form); with ArcFace it is a starting point, not a confirmed value. "
        "Officially the face box comes from MTCNN at every step (no --center_face in the README); here it is fixed",
        SD_FACE,
        f"{REPO} README.md:44-45 (scripts/face_detection.py --optim_forward_guidance --fr_crop --optim_num_steps 2 "
        "--optim_forward_guidance_wt 20000 --ddim_steps 500); stable-diffusion-guided/scripts/face_detection.py:252-261,298,328,436-445",
    ),
    "sd-face-fast": (
        f"Quick sd-face: 50 DDIM steps, recurrence 1 ({FAST})",
        dict(SD_FACE, num_steps=50, recurrence=1),
        f"sd-face ({REPO}) with num_steps and recurrence changed: {FAST}",
    ),
}


def _build(**kwargs: Any) -> Any:
    from .guide import build_face_guide

    return build_face_guide(**kwargs)


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    register(
        "face",
        _build,
        example="--backbone stable-diffusion --prompt 'a headshot of a person' --guide face:image=face.jpg --preset sd-face-fast",
        description="Face identity: 1 - cos between ArcFace embeddings of a fixed crop and of a reference face",
        params=[
            Param("image", "path", required=True, help="reference face photo"),
            Param("arch", "str", "iresnet100", "ArcFace backbone (depth is read from the weights)", choices=("iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200")),
            Param("weights", "path", "", "insightface backbone.pth (default: <torch hub dir>/checkpoints/arcface_<arch>_backbone.pth)"),
            Param("box", "str", "", "face crop x0,y0,x1,y1 as fractions (quote it); default the central 0.1875..0.8125 square"),
            Param("ref_box", "str", "", "crop of the reference image (default: the same box; 0,0,1,1 for an aligned face crop)"),
            Param("loss", "str", "cosine", "cosine = 1 - cos; l1 = mean |e - e_ref| (the official code's form)", choices=("cosine", "l1")),
        ],
        differentiable=True,
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    register_preset_table(register, PRESETS, examples="--backbone stable-diffusion --prompt 'a headshot of a person' --guide face:image=face.jpg")
