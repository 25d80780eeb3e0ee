"""ugd-style: style guidance (Bansal et al. 2023, Sec. 4.2, Fig. 6).

``variant=gram``: Gram matrices of VGG-16/19 features (Gatys et al. 2016) of the
image against those of a style image. ``variant=clip``: 1 - cos between CLIP image
embeddings, as the paper's official code (needs the ugd-clip plugin).
"""

from .guide import DEFAULT_LAYERS, GramStyleGuide, build_style_guide, gram, layer_names, load_vgg_features

__all__ = ["DEFAULT_LAYERS", "GramStyleGuide", "build_style_guide", "gram", "layer_names", "load_vgg_features"]
