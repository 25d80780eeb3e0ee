"""Segmentation guidance: ``l = mean_pixels CE(S(D(x0_hat)), target_map)``.

Bansal et al. 2023 (Sec. 4.2, Fig. 3) guide Stable Diffusion with a segmentation
map; the official code (scripts/segmentation.py) runs torchvision's LR-ASPP
MobileNetV3-Large at 520x520 with ImageNet normalisation and takes
``CrossEntropyLoss(ignore_index=255)`` averaged over pixels. The paper names a
MobileNetV3-Large DeepLabV3, the default here; LR-ASPP and the ResNet DeepLabs are
selectable with ``arch=``. A second backend (``backend=yolo``) turns an
ultralytics YOLO-seg model's instances into a per-pixel class distribution so the
same loss applies.

Targets: a class-index map (grayscale or palette PNG, 255 = ignore; an RGB image
drawn with the PASCAL VOC colours is decoded through that palette) or ``ref=IMAGE``
(the same network segments the reference; its argmax is the target).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ugd_core.errors import UgdError
from ugd_core.guidance import freeze
from ugd_kit.images import load_image
from ugd_kit.weights import find_weights, hub_checkpoint, read_state_dict, ultralytics_weights

IGNORE = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPTION = "--guide segmentation:weights=/path/to/file.pth"
YOLO_OPTION = "--guide segmentation:backend=yolo,weights=/path/to/yolov8n-seg.pt"

# arch -> (torchvision builder name, weights enum name, key of the final classifier weight)
ARCHS: dict[str, tuple[str, str, str]] = {
    "deeplabv3_mobilenet_v3_large": ("deeplabv3_mobilenet_v3_large", "DeepLabV3_MobileNet_V3_Large_Weights", "classifier.4.weight"),
    "deeplabv3_resnet50": ("deeplabv3_resnet50", "DeepLabV3_ResNet50_Weights", "classifier.4.weight"),
    "deeplabv3_resnet101": ("deeplabv3_resnet101", "DeepLabV3_ResNet101_Weights", "classifier.4.weight"),
    "lraspp_mobilenet_v3_large": ("lraspp_mobilenet_v3_large", "LRASPP_MobileNet_V3_Large_Weights", "classifier.high_classifier.weight"),
}
DEFAULT_ARCH = "deeplabv3_mobilenet_v3_large"



# ---------------------------------------------------------------------------- images and maps


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC label colours (class i -> RGB), the usual bit-interleaved palette."""
    cmap = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap.append((r, g, b))
    return cmap


def read_label_map(path: str | Path, num_classes: int, owner: str = "segmentation") -> Tensor:
    """A class-index map [1, H, W] (long) from a grayscale / palette PNG or a VOC-coloured RGB image.

    Values must be class indices below ``num_classes`` or 255 (ignored).
    """
    import numpy as np
    from PIL import Image

    p = Path(path).expanduser()
    if not p.is_file():
        raise UgdError(f"{owner}: target map {str(path)!r} does not exist; pass target=/path/to/mask.png or ref=IMAGE")
    try:
        with Image.open(p) as im:
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
                codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
                lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(voc_colormap())}
                lut[(224 << 16) | (224 << 8) | 192] = IGNORE  # VOC's 'void' border colour
                uniq = np.unique(codes)
                unknown = [hex(int(u)) for u in uniq if int(u) not in lut]
                if unknown:
                    raise UgdError(
                        f"{owner}: target {str(path)!r} is an RGB image with colours outside the VOC palette "
                        f"({', '.join(unknown[:3])}...); save the map as a grayscale or palette PNG of class indices"
                    )
                arr = np.vectorize(lambda v: lut[int(v)], otypes=[np.int64])(codes) if uniq.size else codes
            else:  # L, P (palette indices), I, I;16: the pixel values are the class indices
                arr = np.asarray(im, dtype=np.int64)
    except Exception as exc:  # PIL errors, or the ImportError of a patched Image.open
        raise UgdError(f"{owner}: cannot read target map {str(path)!r} ({exc})") from None
    if arr.ndim != 2:
        raise UgdError(f"{owner}: target map {str(path)!r} must be a single-channel image of class indices")
    bad = sorted({int(v) for v in np.unique(arr) if not (0 <= v < num_classes or v == IGNORE)})
    if bad:
        raise UgdError(
            f"{owner}: target map {str(path)!r} has class values {bad[:5]} outside 0..{num_classes - 1} (255 = ignore); "
            "check the map matches the segmenter's label set"
        )
    return torch.from_numpy(arr)[None]


def _fit_map(target: Tensor, like: Tensor) -> Tensor:
    """The target map resized (nearest) to the logits' spatial size and broadcast to their batch."""
    t = target
    if t.shape[-2:] != like.shape[-2:]:
        t = F.interpolate(t[:, None].float(), size=like.shape[-2:], mode="nearest")[:, 0].long()
    if t.shape[0] == 1 and like.shape[0] > 1:
        t = t.expand(like.shape[0], *t.shape[1:])
    return t.to(like.device)


def _mean_over_kept(per_pixel: Tensor, target: Tensor) -> Tensor:
    """Each sample's mean of a per-pixel loss [N, h, w] over its pixels that are not ignored (255): shape [N], as
    torch's CrossEntropyLoss(ignore_index=255) on that sample alone; an all-ignored map's loss is 0."""
    return per_pixel.flatten(1).sum(1) / (target != IGNORE).flatten(1).sum(1).clamp(min=1)


# ---------------------------------------------------------------------------- torchvision backend


def load_torchvision_segmenter(arch: str = DEFAULT_ARCH, weights: str = "", device: str | torch.device = "cpu") -> tuple[nn.Module, list[str]]:
    """A torchvision segmenter with its weights read from ``weights`` or torchvision's cache; never downloads.

    Returns (model in eval mode, category names or [] when unknown).
    """
    import torchvision.models.segmentation as seg

    if arch not in ARCHS:
        raise UgdError(f"segmentation: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    builder_name, enum_name, cls_key = ARCHS[arch]
    default = getattr(seg, enum_name).DEFAULT
    path = find_weights(f"torchvision {arch} ({default})", OPTION, weights, hub_checkpoint(default.url))
    state = read_state_dict(path, "segmentation")
    state = state.get("model", state) if isinstance(state, dict) else state
    if cls_key not in state:
        raise UgdError(f"segmentation: {str(path)!r} is not a {arch} state dict (no {cls_key!r}); pick the matching arch=")
    num_classes = int(state[cls_key].shape[0])
    kwargs: dict[str, Any] = dict(weights=None, weights_backbone=None, num_classes=num_classes)
    if arch.startswith("deeplab"):
        kwargs["aux_loss"] = any(k.startswith("aux_classifier") for k in state)
    model = getattr(seg, builder_name)(**kwargs)
    model.load_state_dict(state)
    cats = list(default.meta.get("categories", [])) if num_classes == len(default.meta.get("categories", [])) else []
    freeze(model)
    return model.to(device), cats


class SegmentationGuide:
    """Per-pixel cross-entropy against a target class map for a torchvision-style segmenter.

    ``model(x)`` returns logits [N, C, h, w] or a dict with ``"out"`` (torchvision).
    Exactly one of ``target`` (map path or [1, H, W] long tensor) and ``ref`` (image
    path or [1, 3, H, W] tensor in [-1, 1]) is given. ``size`` resizes the guide's
    input to size x size (0 = keep).
    """

    differentiable = True

    def __init__(
        self,
        model: nn.Module,
        *,
        target: str | Path | Tensor | None = None,
        ref: str | Path | Tensor | None = None,
        size: int = 520,
        num_classes: int | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        name: str = "segmentation",
        device: str | torch.device = "cpu",
    ):
        self.name = name
        self.model = model
        freeze(model)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.size = int(size)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.num_classes = num_classes or self._probe_classes()
        self.target = self._make_target(target, ref)

    # the protocol ----------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1], bilinear resize to size x size, ImageNet mean/std (as the official code)."""
        x = (images + 1) / 2
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean.to(x)) / self.std.to(x)

    def f(self, x: Tensor) -> Tensor:
        """Class logits [N, C, h, w]."""
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy per pixel (255 ignored, background included), mean over each sample's pixels that are not
        ignored (as torch's CrossEntropyLoss(ignore_index=255) on that sample alone): shape [N]."""
        t = _fit_map(target, output)
        return _mean_over_kept(F.cross_entropy(output, t, ignore_index=IGNORE, reduction="none"), t)

    # helpers ---------------------------------------------------------------------------
    def segment(self, images: Tensor) -> Tensor:
        """The network's argmax class map [N, h, w] of images in [-1, 1] (no gradient)."""
        with torch.no_grad():
            return self.f(self.preprocess(images.to(self.device))).argmax(1)

    def _probe_classes(self) -> int:
        with torch.no_grad():
            return int(self.f(torch.zeros(1, 3, 64, 64, device=self.device)).shape[1])

    def _make_target(self, target: Any, ref: Any) -> Tensor:
        given = [v for v in (target, ref) if v is not None and not (isinstance(v, str) and not v)]
        if len(given) != 1:
            raise UgdError(f"{self.name}: give exactly one target, target=MAP.png (class indices) or ref=IMAGE (segment a reference)")
        if ref is not None and not (isinstance(ref, str) and not ref):
            img = ref if isinstance(ref, Tensor) else load_image(ref, self.name)
            return self.segment(img)[:1]
        if isinstance(target, Tensor):
            t = target.long()
            return (t[None] if t.dim() == 2 else t).to(self.device)
        return read_label_map(target, self.num_classes, self.name).to(self.device)

    def to(self, device: str | torch.device) -> "SegmentationGuide":
        """Move the network and the target map to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self.target = self.target.to(self.device)
        return self


# ---------------------------------------------------------------------------- YOLO-seg backend


def load_yolo_seg(weights: str = "yolov8n-seg.pt", device: str | torch.device = "cpu") -> nn.Module:
    """The ``nn.Module`` of an ultralytics YOLO segmentation model (never downloads)."""
    try:
        from ultralytics import YOLO
    except ImportError:
        raise UgdError("segmentation: backend=yolo needs ultralytics; `pip install ultralytics`") from None
    net = YOLO(ultralytics_weights(weights, YOLO_OPTION)).model
    if getattr(net, "task", "segment") != "segment" and type(net).__name__ != "SegmentationModel":
        raise UgdError(f"segmentation: {weights!r} is not a YOLO segmentation model; use a *-seg weights file")
    freeze(net)
    return net.to(device)


class YoloSegGuide(SegmentationGuide):
    """Per-pixel cross-entropy for an ultralytics YOLO-seg model (YOLOv8/11-seg heads).

    YOLO-seg predicts instances (class scores, mask coefficients, boxes) rather than a
    semantic map. The ``topk`` most confident anchors give soft instance masks
    ``m_k = sigmoid(coef_k . protos)`` cropped to their boxes; the probability of class
    c at a pixel is ``max_k score_k[c] * m_k`` and of background ``1 - max over the
    foreground``; the distribution is normalised and the same CE applies. Labels:
    0 = background, 1 + i = COCO class i (of the model's ``nc`` classes).
    """

    def __init__(self, model: nn.Module, *, topk: int = 100, size: int = 640, **kwargs: Any):
        head = model.model[-1]  # type: ignore[index]
        if getattr(head, "end2end", False):
            raise UgdError("segmentation: end-to-end (NMS-free) YOLO heads are not supported; use YOLOv8/11-seg weights")
        self.nc, self.nm = int(head.nc), int(head.nm)
        self.topk = int(topk)
        self.classes: list[int] = []
        if size % 32:
            raise UgdError(f"segmentation: size={size} must be a multiple of 32 for YOLO")
        super().__init__(model, size=size, num_classes=1 + self.nc, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs)
        labels = torch.unique(self.target)
        self.classes = [int(v) - 1 for v in labels.tolist() if 0 < v != IGNORE]
        lut = torch.full((256,), IGNORE, dtype=torch.long)
        lut[0] = 0
        for i, c in enumerate(self.classes):
            lut[c + 1] = i + 1
        self.lut = lut

    def _instances(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per image: class scores of the top-k anchors [N, nc, K] and their box-cropped soft masks [N, K, h, w]."""
        (y, proto), _ = self.model(x)
        scores, coef, box = y[:, 4 : 4 + self.nc], y[:, 4 + self.nc :], y[:, :4]
        n, _, h, w = proto.shape
        k = min(self.topk, y.shape[-1])
        idx = scores.detach().amax(1).topk(k, dim=1).indices  # [N, K]
        pick = lambda t: t.gather(2, idx[:, None].expand(-1, t.shape[1], -1))  # noqa: E731
        s, c, b = pick(scores), pick(coef), pick(box)
        masks = torch.sigmoid(torch.einsum("nmk,nmp->nkp", c, proto.flatten(2))).view(n, k, h, w)
        sx, sy = w / x.shape[-1], h / x.shape[-2]
        cx, cy, bw, bh = (b[:, i].detach() for i in range(4))  # xywh in input pixels
        xs = torch.arange(w, device=x.device) + 0.5
        ys = torch.arange(h, device=x.device) + 0.5
        inx = (xs >= ((cx - bw / 2) * sx)[..., None]) & (xs <= ((cx + bw / 2) * sx)[..., None])  # [N, K, w]
        iny = (ys >= ((cy - bh / 2) * sy)[..., None]) & (ys <= ((cy + bh / 2) * sy)[..., None])  # [N, K, h]
        return s, masks * (iny[..., :, None] & inx[..., None, :]).to(masks)

    def f(self, x: Tensor) -> Tensor:
        """Log-probabilities [N, 2 + len(classes), h, w] over (background, target classes, any other class)."""
        s, m = self._instances(x)
        keep = torch.ones(self.nc, device=x.device)
        keep[self.classes] = 0
        fg = [(s[:, c, :, None, None] * m).amax(1) for c in self.classes]
        fg.append(((s * keep[None, :, None]).amax(1)[:, :, None, None] * m).amax(1))
        fg_t = torch.stack(fg, 1)
        p = torch.cat([1 - fg_t.amax(1, keepdim=True), fg_t], 1) + 1e-6
        return (p / p.sum(1, keepdim=True)).log()

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The same cross-entropy as :meth:`SegmentationGuide.loss` (255 ignored, mean over each sample's pixels that are
        not ignored) on YOLO-seg's class probabilities: shape [N]."""
        t = self.lut.to(output.device)[_fit_map(target, output).clamp(0, 255)]
        return _mean_over_kept(F.nll_loss(output, t, ignore_index=IGNORE, reduction="none"), t)

    def segment(self, images: Tensor) -> Tensor:
        """Argmax label map [N, h, w] over background and all classes (0 = background, 1 + COCO index)."""
        with torch.no_grad():
            s, m = self._instances(self.preprocess(images.to(self.device)))
            fg = torch.stack([(s[:, c, :, None, None] * m).amax(1) for c in range(self.nc)], 1)
            return torch.cat([1 - fg.amax(1, keepdim=True), fg], 1).argmax(1)

    def _probe_classes(self) -> int:
        return 1 + self.nc

    def to(self, device: str | torch.device) -> "YoloSegGuide":
        super().to(device)
        return self


# ---------------------------------------------------------------------------- inpainting


class InpaintGuide:
    """Masked reconstruction: mean squared error on the known pixels of a reference image.

    The official ImageNet 'segmentation-guided inpainting' experiment keeps the
    background of a reference (``mask`` = its background class) and re-creates the
    rest, guided by this loss together with the segmentation guide.
    ``mask`` is 1 where the pixel is known (kept).
    """

    differentiable = True

    def __init__(self, image: Tensor, mask: Tensor, name: str = "seg-inpaint", device: str | torch.device = "cpu"):
        self.name = name
        self.device = torch.device(device)
        self.target = (image.to(self.device), mask.float().to(self.device))

    def preprocess(self, images: Tensor) -> Tensor:
        return images

    def f(self, x: Tensor) -> Tensor:
        return x

    def loss(self, output: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
        """Sum of squared errors over known pixels / (3 * known pixels): shape [N]."""
        img, mask = target
        size = output.shape[-2:]
        if img.shape[-2:] != size:
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
        if mask.shape[-2:] != size:
            mask = F.interpolate(mask, size=size, mode="nearest")
        err = ((output - img.to(output)) ** 2 * mask.to(output)).sum(dim=(1, 2, 3))
        return err / (mask.sum(dim=(1, 2, 3)) * output.shape[1]).clamp(min=1.0)

    def to(self, device: str | torch.device) -> "InpaintGuide":
        self.device = torch.device(device)
        self.target = tuple(t.to(self.device) for t in self.target)  # type: ignore[assignment]
        return self


def load_mask(path: str | Path, owner: str = "seg-inpaint") -> Tensor:
    """A keep-mask [1, 1, H, W] in {0, 1} from an image (white / non-zero = known)."""
    import numpy as np
    from PIL import Image

    p = Path(path).expanduser()
    if not p.is_file():
        raise UgdError(f"{owner}: mask {str(path)!r} does not exist; pass mask=/path/to/mask.png (white = keep) or mask=background")
    with Image.open(p) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32)
    return torch.from_numpy((arr > 127).astype(np.float32))[None, None]


# ---------------------------------------------------------------------------- factories


def build_segmentation_guide(
    target: str = "",
    ref: str = "",
    backend: str = "torchvision",
    arch: str = DEFAULT_ARCH,
    weights: str = "",
    size: int = 0,
    topk: int = 100,
    device: str = "cpu",
) -> SegmentationGuide:
    """Factory behind ``--guide segmentation:...``."""
    if bool(target) == bool(ref):
        raise UgdError("segmentation: give exactly one target, target=MAP.png (class indices) or ref=IMAGE (segment a reference)")
    for path in (target, ref):
        if path and not Path(path).expanduser().is_file():
            raise UgdError(f"segmentation: {path!r} does not exist; pass an existing file")
    if backend == "yolo":
        net = load_yolo_seg(weights or "yolov8n-seg.pt", device)
        return YoloSegGuide(net, target=target or None, ref=ref or None, size=size or 640, topk=topk, device=device)
    model, _ = load_torchvision_segmenter(arch, weights, device)
    return SegmentationGuide(model, target=target or None, ref=ref or None, size=size or 520, device=device)


def build_inpaint_guide(
    image: str,
    mask: str = "background",
    arch: str = DEFAULT_ARCH,
    weights: str = "",
    size: int = 0,
    device: str = "cpu",
    segmenter: Callable[[Tensor], Tensor] | None = None,
) -> InpaintGuide:
    """Factory behind ``--guide seg-inpaint:image=PATH,mask=PATH|background``.

    ``mask=background`` keeps the pixels a segmenter labels background (class 0) in
    ``image``, as the official ImageNet experiment; ``segmenter`` (images -> label
    map) replaces the torchvision network in tests.
    """
    img = load_image(image, "seg-inpaint")
    if mask != "background":
        keep = load_mask(mask)
    else:
        if segmenter is None:
            model, _ = load_torchvision_segmenter(arch, weights, device)
            seg = SegmentationGuide(model, target=torch.zeros(1, 1, 1, dtype=torch.long), size=size or 520, device=device)
            segmenter = seg.segment
        labels = segmenter(img.to(device))[:1].float()
        keep = (F.interpolate(labels[:, None], size=img.shape[-2:], mode="nearest") == 0).float()
    return InpaintGuide(img, keep, device=device)
