"""ugd-clip: CLIP text / image guidance (Bansal et al. 2023, Sec. 4.2 and 4.3).

The guide compares the CLIP image embedding of the predicted clean image with a
text embedding (``prompt=``) or the embedding of a reference image (``image=``);
the loss is ``1 - cosine``.
"""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .guide import DEFAULT_MODEL, ClipGuide, build_clip_guide, load_clip, load_image

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["DEFAULT_MODEL", "ClipGuide", "build_clip_guide", "load_clip", "load_image"], "guide"),
})

__all__ = ["DEFAULT_MODEL", "ClipGuide", "build_clip_guide", "load_clip", "load_image"]
