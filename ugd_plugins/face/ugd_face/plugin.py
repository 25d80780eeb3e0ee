"""Registers the ``face`` guide and the paper's face-identity presets."""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

REPO = "https://github.com/arpitbansal297/Universal-Guided-Diffusion"

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sd-face": (
        "Stable Diffusion + face identity: 500 DDIM steps, CFG 7.5 (the script default; the README passes no --scale), "
        "forward s=20000, recurrence k=2, no backward. s was tuned for the official loss, mean |e - e_ref| of FaceNet "
        "embeddings (face:loss=l1); with ArcFace and 1 - cos it is a starting point, not a confirmed value",
        dict(num_steps=500, cfg_scale=7.5, forward_strength=20000.0, forward_schedule="sqrt_1m_abar", recurrence=2),
        f"{REPO} README 'Face Recognition': --optim_guidance_3 --fr_crop --optim_num_steps 2 --optim_guidance_3_wt 20000 "
        "--ddim_steps 500; scripts/face_detection.py (--scale default 7.5, l1_loss)",
    ),
    "sd-face-fast": (
        "Quick sd-face: 50 DDIM steps, recurrence 1 (not tuned; for previews)",
        dict(num_steps=50, cfg_scale=7.5, forward_strength=20000.0, forward_schedule="sqrt_1m_abar", recurrence=1),
        f"derived from sd-face ({REPO}); reduced here, not in the paper",
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
    register_preset_table(register, PRESETS)
