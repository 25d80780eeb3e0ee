"""ugd-face: face-identity guidance (Bansal et al. 2023, Sec. 4.2, Fig. 4).

A frozen ArcFace IResNet embeds a fixed crop of the predicted clean image; the loss
is ``1 - cos`` to the embedding of a reference face (``loss=l1`` gives the official
code's mean absolute difference). :func:`rerank` orders finished samples by the same
identity score, as the paper's top-k selection.
"""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .guide import DEFAULT_BOX, FaceGuide, build_face_guide, load_arcface, parse_box, rerank
    from .iresnet import IResNet, iresnet18, iresnet34, iresnet50, iresnet100, iresnet200

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys([
        "DEFAULT_BOX", "FaceGuide", "build_face_guide", "load_arcface", "parse_box", "rerank",
    ], "guide"),
    **dict.fromkeys([
        "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200",
    ], "iresnet"),
})

__all__ = [
    "DEFAULT_BOX",
    "FaceGuide",
    "IResNet",
    "build_face_guide",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "iresnet200",
    "load_arcface",
    "parse_box",
    "rerank",
]
