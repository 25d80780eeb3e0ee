"""The digits-world guides: small off-the-shelf networks (family A) wrapped as GuidanceFunctions.

Each factory loads its frozen network from ``ugd_digits/weights/<net>.safetensors``
(or ``weights=PATH``) when it is called, never at import. Guides take images
NCHW float in [-1, 1], shape [N, 1, 32, 32] (3 channels are averaged, other
sizes resized) and return one loss per sample, shape [N]; lower is better.
``REGISTRATIONS`` (declared in :mod:`ugd_digits.registrations`, without torch) lists every guide for the
plugin's ``ugd_register_guides`` hook.

Digits analogues of the paper's experiments: ``digit`` (label / CLIP-like
semantic guidance), ``digit-mask`` (segmentation), ``digit-box`` (object
location), ``digit-id`` (face recognition), ``digit-style`` (style, Gram
matrices), ``inpaint`` (segmentation-guided inpainting's known-pixel term) and
``digit-hard`` (a non-differentiable guide, for the zeroth-order path).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ugd_core.errors import UgdError
from ugd_core.guidance import Guide

from .data import CANVAS, foreground_mask
from .registrations import GUIDES as REGISTRATIONS  # noqa: F401  (names, params, lazy factories: no torch there)
from .registrations import STYLE_LAYERS
from .targets import REGIONS, half_mask, load_mask, parse_box, ref_canvas, reference_image
from .train_guides import load_network

N_CLASSES = 10


class DigitGuide(Guide):
    """A :class:`ugd_core.guidance.Guide` whose ``to`` also moves dict / list targets."""

    def to(self, device: torch.device | str) -> "DigitGuide":
        for m in self.modules:
            m.to(device)
        self.target = _move(self.target, device)
        return self


def _move(obj: Any, device: torch.device | str) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(v, device) for v in obj)
    return obj


def preprocess(images: Tensor) -> Tensor:
    """[N, C, H, W] in [-1, 1] -> [N, 1, 32, 32]: average 3 channels to one, resize other sizes bilinearly."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise UgdError(f"digits guides take images as an [N, C, H, W] tensor in [-1, 1]; got {shape}")
    if images.shape[1] == 3:
        images = images.mean(dim=1, keepdim=True)
    elif images.shape[1] != 1:
        raise UgdError(f"digits guides take 1- or 3-channel images; got {images.shape[1]} channels")
    if images.shape[-2:] != (CANVAS, CANVAS):
        images = F.interpolate(images, size=(CANVAS, CANVAS), mode="bilinear", align_corners=False)
    return images


def _check_label(label: Any, owner: str) -> int:
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < N_CLASSES:
        raise UgdError(f"{owner}: label={label!r} is not a digit class; use an integer 0..{N_CLASSES - 1}")
    return label


def _expand(t: Tensor, n: int) -> Tensor:
    return t.expand(n, *t.shape[1:])


def _guide(name: str, f: Callable, loss: Callable, target: Any, modules: tuple[nn.Module, ...] = (),
           differentiable: bool = True, device: str = "cpu") -> DigitGuide:
    g = DigitGuide(name, f, loss, target, preprocess, differentiable, modules)
    return g.to(device)


# ----------------------------------------------------------------------------------------------- label


def digit_guide(label: int, weights: str | None = None, device: str = "cpu", network: str = "digit_classifier",
                name: str = "digit") -> DigitGuide:
    """Label guidance: cross-entropy of ``network``'s logits (``digit_classifier``, or the noise-trained
    ``digit_classifier_robust`` for ``digit-robust``) against ``label``."""
    label = _check_label(label, name)
    net = load_network(network, weights, device)

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, _expand(target, logits.shape[0]), reduction="none")

    return _guide(name, net, loss, torch.tensor([label]), (net,), device=device)


def digit_robust_guide(label: int, weights: str | None = None, device: str = "cpu") -> DigitGuide:
    """Label guidance with ``digit_classifier_robust``: the same architecture trained on noisy canvases."""
    return digit_guide(label, weights, device, network="digit_classifier_robust", name="digit-robust")


def digit_hard_guide(label: int, weights: str | None = None, device: str = "cpu") -> DigitGuide:
    """Non-differentiable label guide: 0.5 * (1 - [argmax == label]) + 0.5 * (1 - p(label)), under no_grad.

    The argmax term is piecewise constant; the probability term keeps it
    informative for a zeroth-order gradient estimate.
    """
    label = _check_label(label, "digit-hard")
    net = load_network("digit_classifier", weights, device)

    def f(x: Tensor) -> Tensor:
        with torch.no_grad():
            return net(x)

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            t = _expand(target, logits.shape[0])
            p = logits.softmax(1).gather(1, t[:, None])[:, 0]
            hit = (logits.argmax(1) == t).float()
            return 0.5 * (1 - hit) + 0.5 * (1 - p)

    return _guide("digit-hard", f, loss, torch.tensor([label]), (net,), differentiable=False, device=device)


# ----------------------------------------------------------------------------------------------- segmentation


def digit_mask_guide(mask: str | None = None, ref: int | None = None, weights: str | None = None,
                     device: str = "cpu") -> DigitGuide:
    """Segmentation guidance: per-pixel cross-entropy (background and ink) of ``digit_segmenter`` vs a target mask."""
    if (mask is None) == (ref is None):
        raise UgdError("digit-mask: give exactly one of mask=PATH (PNG, ink bright) or ref=INT (held-out digit index)")
    target = load_mask(mask, "digit-mask: mask") if mask is not None else foreground_mask(ref_canvas(ref))
    net = load_network("digit_segmenter", weights, device)

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        t = _expand(target, logits.shape[0]).long()
        return F.cross_entropy(logits, t, reduction="none").mean(dim=(1, 2))

    return _guide("digit-mask", net, loss, target, (net,), device=device)


# ----------------------------------------------------------------------------------------------- location


def digit_box_guide(box: str, label: int | None = None, weights: str | None = None, device: str = "cpu") -> DigitGuide:
    """Object-location guidance: L1 + GIoU between ``digit_detector``'s box and ``box``, + CE to ``label`` if given."""
    from .train_guides import detection_loss

    target_box = parse_box(box) / CANVAS
    lab = None if label is None else torch.tensor([_check_label(label, "digit-box")])
    net = load_network("digit_detector", weights, device)

    def loss(out: tuple[Tensor, Tensor], target: dict[str, Tensor | None]) -> Tensor:
        pred_box, logits = out
        n = pred_box.shape[0]
        lab_t = target["label"]
        return detection_loss(pred_box, logits, _expand(target["box"], n), None if lab_t is None else _expand(lab_t, n))

    return _guide("digit-box", net, loss, {"box": target_box, "label": lab}, (net,), device=device)


# ----------------------------------------------------------------------------------------------- identity


def digit_id_guide(ref: int | None = None, image: str | None = None, weights: str | None = None,
                   device: str = "cpu") -> DigitGuide:
    """Identity guidance (face-recognition analogue): 1 - cosine of ``digit_id`` embeddings of x and the reference."""
    ref_img = reference_image(ref, image, "digit-id")
    net = load_network("digit_id", weights, device)
    with torch.no_grad():
        target = F.normalize(net(ref_img.to(device)), dim=1)

    def loss(z: Tensor, target: Tensor) -> Tensor:
        return 1 - (F.normalize(z, dim=1) * target).sum(1)

    return _guide("digit-id", net, loss, target, (net,), device=device)


# ----------------------------------------------------------------------------------------------- style


def gram(fmap: Tensor) -> Tensor:
    """Normalised Gram matrix F F^T / (C H W) of [N, C, H, W] feature maps -> [N, C, C] (Gatys et al. 2016)."""
    n, c, h, w = fmap.shape
    flat = fmap.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def gram_distance(grams: list[Tensor], target: list[Tensor]) -> Tensor:
    """Sum over layers of mean((G - G_t)^2) / mean(G_t^2): per-layer relative squared Gram error, shape [N].

    Dividing by the target Gram's mean square makes every layer count alike and
    the loss O(1) (raw squared Gram differences are ~1e-4), so guide weights are
    comparable with the other guides.
    """
    return sum((g - t).pow(2).mean(dim=(1, 2)) / t.pow(2).mean(dim=(1, 2)).clamp(min=1e-12) for g, t in zip(grams, target))


def convnet_block_outputs(net: nn.Module, x: Tensor, blocks: list[int]) -> list[Tensor]:
    """Activations after the chosen conv blocks (1-based, 1..6) of a ``models.ConvNet``."""
    out, k = [], 0
    h = x
    for layer in net.features:
        h = layer(h)
        if isinstance(layer, nn.Sequential):  # a conv-norm-act block
            k += 1
            if k in blocks:
                out.append(h)
            if k >= max(blocks):
                break
    return out


def _parse_layers(layers: str, owner: str, n_blocks: int = 6) -> list[int]:
    try:
        vals = sorted({int(s) for s in str(layers).split(",") if s.strip()})
    except ValueError:
        vals = []
    if not vals or not all(1 <= v <= n_blocks for v in vals):
        raise UgdError(f'{owner}: layers={layers!r} is malformed; give conv block numbers 1..{n_blocks}, e.g. layers="1,2,3,4"')
    return vals


def digit_style_guide(ref: int | None = None, image: str | None = None, layers: str = STYLE_LAYERS,
                      weights: str | None = None, device: str = "cpu") -> DigitGuide:
    """Style guidance: Gram-matrix distance (:func:`gram_distance`) on ``digit_classifier`` conv maps (Gatys et al. 2016)."""
    blocks = _parse_layers(layers, "digit-style")
    style_img = reference_image(ref, image, "digit-style")
    net = load_network("digit_classifier", weights, device)

    def f(x: Tensor) -> list[Tensor]:
        return [gram(m) for m in convnet_block_outputs(net, x, blocks)]

    with torch.no_grad():
        target = f(style_img.to(device))

    def loss(grams: list[Tensor], target: list[Tensor]) -> Tensor:
        return gram_distance(grams, target)

    return _guide("digit-style", f, loss, target, (net,), device=device)


# ----------------------------------------------------------------------------------------------- inpainting


def inpaint_guide(ref: int | None = None, image: str | None = None, region: str | None = None,
                  mask: str | None = None, device: str = "cpu") -> DigitGuide:
    """Model-free inpainting term: mean squared error to the reference over the known pixels only."""
    img = reference_image(ref, image, "inpaint")
    if (region is None) == (mask is None):
        raise UgdError(f"inpaint: give exactly one of region={{{','.join(REGIONS)}}} (the known half) or mask=PATH "
                       "(PNG, known pixels bright)")
    known = half_mask(region) if region is not None else load_mask(mask, "inpaint: mask")
    if not known.any():
        raise UgdError(f"inpaint: mask {mask!r} marks no known pixel; known pixels must be bright (> 50% grey)")
    target = {"image": img, "known": known[:, None].float()}

    def loss(x: Tensor, target: dict[str, Tensor]) -> Tensor:
        k = target["known"]
        return ((x - target["image"]).pow(2) * k).sum(dim=(1, 2, 3)) / k.sum()

    return _guide("inpaint", lambda x: x, loss, target, (), device=device)
