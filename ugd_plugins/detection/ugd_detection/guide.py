"""Object-location guidance: the detector's own training loss against target boxes and labels.

Bansal et al. 2023 (Sec. 4.2, Fig. 5) steer Stable Diffusion and an ImageNet model
so that given objects appear in given boxes. The official code
(scripts/object_detection.py) runs torchvision's Faster R-CNN ResNet-50-FPN v2 in
train mode with BatchNorm in eval mode, calls ``model(images, targets)`` and sums
``loss_classifier + loss_objectness + loss_rpn_box_reg``. Here every BatchNorm is
replaced by ``FrozenBatchNorm2d`` (as torchvision does for its pretrained
detectors), the model stays in train mode so the RPN and ROI heads compute their
losses, and the default sum also includes the ROI box regression
(``terms=official`` drops it, as the official code). Proposal sampling in train
mode is random; it is seeded (``seed=``) so one image gives one loss.

``backend=yolo`` uses an ultralytics YOLO detector and its own training loss
(box IoU + classification BCE + DFL, ``v8DetectionLoss``).

Targets: ``boxes="x0,y0,x1,y1;..."`` (fractions of the image when every value is
<= 1, else pixels of the image the guide sees), ``labels="dog;person"`` (COCO names
or indices), or ``targets=FILE.json``, or ``ref=IMAGE`` (the detector's confident
boxes on a reference image, as the official ImageNet experiment).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ugd_core.errors import UgdError
from ugd_core.guidance import freeze
from ugd_kit.images import load_image
from ugd_kit.weights import find_weights, hub_checkpoint, read_state_dict, ultralytics_weights

OPTION = "--guide detection:weights=/path/to/file.pth"
YOLO_OPTION = "--guide detection:backend=yolo,weights=/path/to/yolov8n.pt"
ARCHS: dict[str, tuple[str, str]] = {
    "fasterrcnn_resnet50_fpn_v2": ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights"),
    "fasterrcnn_resnet50_fpn": ("fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights"),
    "fasterrcnn_mobilenet_v3_large_fpn": ("fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights"),
}
DEFAULT_ARCH = "fasterrcnn_resnet50_fpn_v2"
TERMS = {
    "all": ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"),
    "official": ("loss_objectness", "loss_rpn_box_reg", "loss_classifier"),
}


# ---------------------------------------------------------------------------- targets


@dataclass
class BoxTarget:
    """Target boxes [M, 4] (x0, y0, x1, y1) and class indices [M]; ``relative`` boxes are fractions of W, H."""

    boxes: Tensor
    labels: Tensor
    relative: bool = True

    def absolute(self, height: int, width: int, device: torch.device | str) -> Tensor:
        """Boxes in pixels of an image of that size."""
        b = self.boxes.to(device=device, dtype=torch.float32)
        if self.relative:
            b = b * torch.tensor([width, height, width, height], dtype=b.dtype, device=b.device)
        return b

    def to(self, device: torch.device | str) -> "BoxTarget":
        return BoxTarget(self.boxes.to(device), self.labels.to(device), self.relative)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", " ")


def label_index(label: Any, categories: Sequence[str], owner: str = "detection") -> int:
    """A COCO name or index -> the detector's class index (UgdError naming close matches)."""
    text = str(label).strip()
    names = [_norm(c) for c in categories]
    placeholders = (_norm("N/A"), _norm("__background__"))  # torchvision's unused and background slots: no class to detect
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < len(categories):
            raise UgdError(f"{owner}: label index {idx} is outside 0..{len(categories) - 1}")
        if names[idx] in placeholders:
            raise UgdError(f"{owner}: label index {idx} is the detector's {categories[idx]!r} slot, no class; use a COCO "
                           "class name or index")
        return idx
    if _norm(text) in names and _norm(text) not in placeholders:
        return names.index(_norm(text))
    close = difflib.get_close_matches(_norm(text), [n for n in names if n not in placeholders], n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UgdError(f"{owner}: unknown label {text!r}{hint}; use a COCO class name or index")


def parse_targets(boxes: str, labels: str, categories: Sequence[str], owner: str = "detection") -> BoxTarget:
    """``boxes="x0,y0,x1,y1;..."`` and ``labels="dog;cat"`` -> a BoxTarget."""
    try:
        rows = [[float(v) for v in part.split(",")] for part in boxes.split(";") if part.strip()]
    except ValueError:
        raise UgdError(f"{owner}: boxes={boxes!r} is not numbers; write boxes=\"x0,y0,x1,y1;x0,y0,x1,y1\" (quoted)") from None
    names = [p for p in labels.replace(",", ";").split(";") if p.strip()]
    return make_target(rows, names, categories, owner)


def make_target(rows: Sequence[Sequence[float]], names: Sequence[Any], categories: Sequence[str], owner: str = "detection") -> BoxTarget:
    """Validate boxes and labels and resolve label names."""
    if not rows:
        raise UgdError(f"{owner}: no target boxes; give boxes=\"x0,y0,x1,y1;...\" and labels=\"dog;...\" or targets=FILE.json")
    if len(names) != len(rows):
        raise UgdError(f"{owner}: {len(rows)} boxes but {len(names)} labels; give one label per box")
    for r in rows:
        if len(r) != 4 or not (r[0] < r[2] and r[1] < r[3]) or min(r) < 0:
            raise UgdError(f"{owner}: box {list(r)} must be x0,y0,x1,y1 with x0 < x1, y0 < y1, all >= 0")
    t = torch.tensor([list(map(float, r)) for r in rows])
    relative = bool(t.max() <= 1.0)
    ids = torch.tensor([label_index(n, categories, owner) for n in names], dtype=torch.long)
    return BoxTarget(t, ids, relative)


def read_targets_file(path: str | Path, categories: Sequence[str], owner: str = "detection") -> BoxTarget:
    """JSON: ``[{"box": [x0, y0, x1, y1], "label": "dog"}, ...]`` or ``{"boxes": [[...]], "labels": [...]}``."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UgdError(f"{owner}: targets file {str(path)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UgdError(f"{owner}: targets file {str(path)!r} is not readable JSON ({exc})") from None
    if isinstance(data, list):
        try:
            rows, names = [d["box"] for d in data], [d["label"] for d in data]
        except (KeyError, TypeError):
            raise UgdError(f'{owner}: {str(path)!r}: each item needs "box" and "label"') from None
    elif isinstance(data, dict) and "boxes" in data and "labels" in data:
        rows, names = data["boxes"], data["labels"]
    else:
        raise UgdError(f'{owner}: {str(path)!r} must be a list of {{"box", "label"}} or {{"boxes": [...], "labels": [...]}}')
    return make_target(rows, names, categories, owner)


# ---------------------------------------------------------------------------- torchvision Faster R-CNN


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with the same statistics (in place)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.running_mean.device)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def coco_categories(arch: str = DEFAULT_ARCH) -> list[str]:
    """torchvision's 91-entry COCO category list (index = label id; '__background__' and 'N/A' included).

    Read from the weights enum's metadata, which needs no download.
    """
    import torchvision.models.detection as det

    return list(getattr(det, ARCHS[arch][1]).DEFAULT.meta["categories"])


def coco80() -> list[str]:
    """The 80 COCO class names in YOLO's order: torchvision's list without its placeholders."""
    return [c for c in coco_categories() if c not in ("__background__", "N/A")]


def load_torchvision_detector(
    arch: str = DEFAULT_ARCH, weights: str = "", min_size: int = 0, device: str | torch.device = "cpu"
) -> nn.Module:
    """A torchvision Faster R-CNN with FrozenBatchNorm2d, weights from ``weights`` or torchvision's cache; never downloads."""
    import torchvision.models.detection as det

    if arch not in ARCHS:
        raise UgdError(f"detection: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    builder, enum_name = ARCHS[arch]
    default = getattr(det, enum_name).DEFAULT
    path = find_weights(f"torchvision {arch} ({default})", OPTION, weights, hub_checkpoint(default.url))
    state = read_state_dict(path, "detection")
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state:
        raise UgdError(f"detection: {str(path)!r} is not a Faster R-CNN state dict (no {key!r})")
    kwargs: dict[str, Any] = dict(weights=None, weights_backbone=None, num_classes=int(state[key].shape[0]))
    if min_size:
        kwargs.update(min_size=min_size, max_size=max(min_size, int(min_size * 1333 / 800)))
    model = freeze_batchnorm(getattr(det, builder)(**kwargs))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UgdError(f"detection: {str(path)!r} does not fit {arch} ({str(exc)[:160]}); pick the matching arch=") from None
    return model.to(device)


class FasterRCNNGuide:
    """The detector's training loss (RPN objectness + RPN box + ROI classification [+ ROI box]) per sample.

    ``model`` is a torchvision ``GeneralizedRCNN``; its BatchNorms should be frozen
    (:func:`freeze_batchnorm`; done here). It runs in train mode, parameters frozen.
    """

    differentiable = True

    def __init__(
        self,
        model: nn.Module,
        target: BoxTarget | None = None,
        *,
        ref: str | Path | Tensor | None = None,
        ref_score: float = 0.9,
        terms: str = "all",
        seed: int = 0,
        name: str = "detection",
        device: str | torch.device = "cpu",
    ):
        if terms not in TERMS:
            raise UgdError(f"{name}: terms={terms!r} is not one of {', '.join(TERMS)}")
        self.name, self.terms, self.seed = name, TERMS[terms], int(seed)
        self.model = freeze_batchnorm(model)
        freeze(self.model)
        self.device = torch.device(device)
        self.model.to(self.device)
        if (target is None) == (ref is None):
            raise UgdError(f"{name}: give boxes= and labels=, targets=FILE.json, or ref=IMAGE (exactly one)")
        self.target: BoxTarget = target if target is not None else self.detect(ref, ref_score)  # type: ignore[arg-type]
        self.model.train()  # RPN / ROI heads compute their losses only in train mode; BatchNorm is frozen

    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1]; the detector's own transform normalises and resizes (differentiably)."""
        return (images + 1) / 2

    def f(self, x: Tensor) -> Tensor:
        """Per-sample loss terms [N, len(terms)] (one detector call per sample, seeded proposal sampling)."""
        h, w = x.shape[-2:]
        tgt = {"boxes": self.target.absolute(h, w, x.device), "labels": self.target.labels.to(x.device)}
        rows = []
        devices = [x.device] if x.device.type == "cuda" else []
        for i in range(x.shape[0]):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                parts = self.model([x[i]], [tgt])
            rows.append(torch.stack([parts[k] for k in self.terms]))
        return torch.stack(rows)

    def loss(self, output: Tensor, target: Any) -> Tensor:
        """Sum of the selected detector loss terms: shape [N]."""
        return output.sum(-1)

    def detect(self, image: str | Path | Tensor, min_score: float = 0.9) -> BoxTarget:
        """The detector's boxes (score >= min_score) on an image, as a relative BoxTarget."""
        img = image if isinstance(image, Tensor) else load_image(image, self.name)
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model([self.preprocess(img.to(self.device))[0]])[0]
        finally:
            self.model.train()
        keep = out["scores"] >= min_score
        if not keep.any():
            raise UgdError(f"{self.name}: the detector finds nothing with score >= {min_score} in the reference; lower ref_score=")
        h, w = img.shape[-2:]
        boxes = out["boxes"][keep] / torch.tensor([w, h, w, h], device=out["boxes"].device)
        return BoxTarget(boxes.cpu(), out["labels"][keep].cpu(), relative=True)

    def to(self, device: str | torch.device) -> "FasterRCNNGuide":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self


# ---------------------------------------------------------------------------- ultralytics YOLO


def load_yolo(weights: str = "yolov8n.pt", device: str | torch.device = "cpu") -> nn.Module:
    """The ``nn.Module`` of an ultralytics YOLO detector (never downloads)."""
    try:
        from ultralytics import YOLO
    except ImportError:
        raise UgdError("detection: backend=yolo needs ultralytics; `pip install ultralytics`") from None
    net = YOLO(ultralytics_weights(weights, YOLO_OPTION)).model
    freeze(net)
    return net.to(device)


def yolo_categories(model: nn.Module) -> list[str]:
    """Class names of a YOLO model (COCO names when the model carries only numbers)."""
    names = getattr(model, "names", None) or {}
    values = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    if not values or all(str(v).isdigit() for v in values):
        nc = int(model.model[-1].nc)  # type: ignore[index]
        names80 = coco80()
        return names80[:nc] if nc <= len(names80) else [str(i) for i in range(nc)]
    return [str(v) for v in values]


class YoloDetectionGuide:
    """An ultralytics YOLO detector's own training loss (box, cls, dfl) against target boxes, per sample."""

    differentiable = True

    def __init__(self, model: nn.Module, target: BoxTarget, *, size: int = 640, name: str = "detection", device: str | torch.device = "cpu"):
        if size % 32:
            raise UgdError(f"{name}: size={size} must be a multiple of 32 for YOLO")
        self.name, self.size, self.target = name, int(size), target
        self.model = model
        freeze(model)
        self.device = torch.device(device)
        self.model.to(self.device)
        self._criterion()

    def _criterion(self) -> None:
        from ultralytics.cfg import get_cfg

        args = getattr(self.model, "args", None)
        if not hasattr(args, "box"):  # checkpoints carry a dict; the loss reads attributes
            hyp = get_cfg()
            for k in ("box", "cls", "dfl"):
                if isinstance(args, dict) and k in args:
                    setattr(hyp, k, args[k])
            self.model.args = hyp
        self.criterion = self.model.init_criterion()  # type: ignore[operator]

    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1] RGB (resized to size x size in :meth:`f`, once the boxes are read at the image's size)."""
        return (images + 1) / 2

    def f(self, x: Tensor) -> Tensor:
        """Per-sample (box, cls, dfl) losses [N, 3] from one batched forward pass."""
        h, w = x.shape[-2:]
        # pixel boxes are pixels of the image the guide is given (as for torchvision); YOLO's targets are fractions
        xyxy = self.target.absolute(h, w, x.device) / torch.tensor([w, h, w, h], dtype=torch.float32, device=x.device)
        if (h, w) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        out = self.model(x)
        preds = out[1] if isinstance(out, tuple) else out
        m = self.target.boxes.shape[0]
        xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
        batch = {"batch_idx": torch.zeros(m, device=x.device), "cls": self.target.labels.to(x.device).float()[:, None], "bboxes": xywh}
        rows = []
        for i in range(x.shape[0]):
            loss, _ = self.criterion(_slice(preds, i), batch)
            rows.append(loss.reshape(-1))
        return torch.stack(rows)

    def loss(self, output: Tensor, target: Any) -> Tensor:
        return output.sum(-1)

    def to(self, device: str | torch.device) -> "YoloDetectionGuide":
        self.device = torch.device(device)
        self.model.to(self.device)
        self._criterion()
        return self


def _slice(preds: Any, i: int) -> Any:
    """Sample i of a YOLO raw-prediction structure (dicts, lists and tensors batched on dim 0)."""
    if isinstance(preds, Tensor):
        return preds[i : i + 1]
    if isinstance(preds, dict):
        return {k: _slice(v, i) for k, v in preds.items()}
    if isinstance(preds, (list, tuple)):
        return type(preds)(_slice(v, i) for v in preds)
    return preds


# ---------------------------------------------------------------------------- factory


def build_detection_guide(
    boxes: str = "",
    labels: str = "",
    targets: str = "",
    ref: str = "",
    ref_score: float = 0.9,
    backend: str = "torchvision",
    arch: str = DEFAULT_ARCH,
    weights: str = "",
    size: int = 0,
    terms: str = "all",
    seed: int = 0,
    device: str = "cpu",
) -> Any:
    """Factory behind ``--guide detection:...``."""
    given = [bool(boxes or labels), bool(targets), bool(ref)]
    if sum(given) != 1:
        raise UgdError('detection: give boxes="x0,y0,x1,y1;..." with labels="dog;...", or targets=FILE.json, or ref=IMAGE')
    if backend == "yolo":
        if ref:
            raise UgdError("detection: ref= is supported with backend=torchvision only; give boxes= and labels=")
        net = load_yolo(weights or "yolov8n.pt", device)
        cats = yolo_categories(net)
        target = read_targets_file(targets, cats) if targets else parse_targets(boxes, labels, cats)
        return YoloDetectionGuide(net, target, size=size or 640, device=device)
    cats = coco_categories(arch)
    target = None if ref else (read_targets_file(targets, cats) if targets else parse_targets(boxes, labels, cats))
    if ref:
        load_image(ref, "detection")  # fail on a bad path before loading weights
    model = load_torchvision_detector(arch, weights, size, device)
    return FasterRCNNGuide(model, target, ref=ref or None, ref_score=ref_score, terms=terms, seed=seed, device=device)
