"""ugd-clip: CLIP text / image guidance (Bansal et al. 2023, Sec. 4.2 and 4.3).

The guide compares the CLIP image embedding of the predicted clean image with a
text embedding (``prompt=``) or the embedding of a reference image (``image=``);
the loss is ``1 - cosine``.
"""

from .guide import DEFAULT_MODEL, ClipGuide, build_clip_guide, load_clip, load_image

__all__ = ["DEFAULT_MODEL", "ClipGuide", "build_clip_guide", "load_clip", "load_image"]
