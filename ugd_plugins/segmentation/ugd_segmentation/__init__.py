"""ugd-segmentation: segmentation-map guidance (Bansal et al. 2023, Sec. 4.2) and masked inpainting.

Loss: per-pixel cross-entropy of a frozen segmenter's logits against a target
class map (background included), averaged over pixels, one value per sample.
"""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .guide import (
        ARCHS, InpaintGuide, SegmentationGuide, YoloSegGuide, build_inpaint_guide,
        build_segmentation_guide, load_torchvision_segmenter, load_yolo_seg, read_label_map,
        voc_colormap,
    )

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys([
        "ARCHS", "InpaintGuide", "SegmentationGuide", "YoloSegGuide", "build_inpaint_guide",
        "build_segmentation_guide", "load_torchvision_segmenter", "load_yolo_seg", "read_label_map",
        "voc_colormap",
    ], "guide"),
})

__all__ = [
    "ARCHS",
    "InpaintGuide",
    "SegmentationGuide",
    "YoloSegGuide",
    "build_inpaint_guide",
    "build_segmentation_guide",
    "load_torchvision_segmenter",
    "load_yolo_seg",
    "read_label_map",
    "voc_colormap",
]
