"""ugd-detection: object-location guidance (Bansal et al. 2023, Sec. 4.2, Fig. 5).

The loss is the detector's own training loss against target boxes and labels:
torchvision Faster R-CNN (RPN + ROI losses, BatchNorm frozen) or ultralytics YOLO
(``v8DetectionLoss``), one value per sample.
"""

from .guide import (
    ARCHS,
    BoxTarget,
    FasterRCNNGuide,
    YoloDetectionGuide,
    build_detection_guide,
    coco_categories,
    freeze_batchnorm,
    load_torchvision_detector,
    load_yolo,
    parse_targets,
    read_targets_file,
)

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
