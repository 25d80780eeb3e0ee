"""ugd-style: style guidance (Bansal et al. 2023, Sec. 4.2, Fig. 6).

``variant=gram``: Gram matrices of VGG-16/19 features (Gatys et al. 2016) of the
image against those of a style image. ``variant=clip``: 1 - cos between CLIP image
embeddings, as the paper's official code (needs the ugd-clip plugin).
"""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .guide import DEFAULT_LAYERS, GramStyleGuide, build_style_guide, gram, layer_names, load_vgg_features

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys([
        "DEFAULT_LAYERS", "GramStyleGuide", "build_style_guide", "gram", "layer_names",
        "load_vgg_features",
    ], "guide"),
})

__all__ = ["DEFAULT_LAYERS", "GramStyleGuide", "build_style_guide", "gram", "layer_names", "load_vgg_features"]
