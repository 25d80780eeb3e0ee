"""ugd-detection: object-location guidance (Bansal et al. 2023, Sec. 4.2, Fig. 5).

The loss is the detector's own training loss against target boxes and labels:
torchvision Faster R-CNN (RPN + ROI losses, BatchNorm frozen) or ultralytics YOLO
(``v8DetectionLoss``), one value per sample.
"""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .guide import (
        ARCHS, BoxTarget, FasterRCNNGuide, YoloDetectionGuide, build_detection_guide,
        coco_categories, freeze_batchnorm, load_torchvision_detector, load_yolo, parse_targets,
        read_targets_file,
    )

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys([
        "ARCHS", "BoxTarget", "FasterRCNNGuide", "YoloDetectionGuide", "build_detection_guide",
        "coco_categories", "freeze_batchnorm", "load_torchvision_detector", "load_yolo",
        "parse_targets", "read_targets_file",
    ], "guide"),
})

__all__ = [
    "ARCHS",
    "BoxTarget",
    "FasterRCNNGuide",
    "YoloDetectionGuide",
    "build_detection_guide",
    "coco_categories",
    "freeze_batchnorm",
    "load_torchvision_detector",
    "load_yolo",
    "parse_targets",
    "read_targets_file",
]
