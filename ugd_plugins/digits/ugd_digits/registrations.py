"""What the digits plugin registers, declared without importing torch.

Names, descriptions and parameters live here; each factory is a :func:`lazy` reference that imports
its module (``guides``, ``noisy_classifier``, ``backbone``: they import torch) when the item is built.
So discovering the plugin, ``ugd list`` and ``ugd info`` never import torch
(``tests/test_cli.py::test_list_and_info_do_not_import_torch``). Keep it so: import nothing heavy here.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ugd_core.params import Param

REGIONS = ("left", "right", "top", "bottom")  # the known half of ``inpaint:region=`` (targets.half_mask)
STYLE_LAYERS = "1,2,3,4"  # ConvNet conv blocks (1..6) whose Gram matrices define style by default


def lazy(module: str, name: str) -> Callable[..., Any]:
    """A factory that imports ``ugd_digits.<module>`` and calls its ``name`` with the same arguments."""

    def factory(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"ugd_digits.{module}"), name)(*args, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"ugd_digits.{module}.{name}, imported when called."
    return factory


_WEIGHTS = "path of a {net} .safetensors file (default: the plugin's trained weights)"
_REF = Param("ref", "int", None, "held-out digit index 0..999, placed at its seeded random placement", example="5")
_IMAGE = Param("image", "path", None, "reference image file (PNG, bright ink on dark; resized to 32x32)")


def _label_params(network: str) -> list[Param]:
    """The params of a label guide: the target class and the weights of its ``network``."""
    return [Param("label", "int", None, "target digit class 0..9", required=True),
            Param("weights", "path", None, _WEIGHTS.format(net=network))]


GUIDES: list[dict[str, Any]] = [
    dict(
        name="digit",
        factory=lazy("guides", "digit_guide"),
        description="Digits: label guidance, cross-entropy of a small ConvNet classifier to the target class",
        params=_label_params("digit_classifier"),
        differentiable=True,
    ),
    dict(
        name="digit-robust",
        factory=lazy("guides", "digit_robust_guide"),
        description="Digits: label guidance with a classifier trained on noisy canvases (its gradients follow strokes more than pixels)",
        params=_label_params("digit_classifier_robust"),
        differentiable=True,
    ),
    dict(
        name="digit-mask",
        factory=lazy("guides", "digit_mask_guide"),
        description="Digits: segmentation guidance, per-pixel cross-entropy of a small SegNet to a target ink mask",
        params=[Param("mask", "path", None, "target mask PNG (ink bright), resized to 32x32"), _REF,
                Param("weights", "path", None, _WEIGHTS.format(net="digit_segmenter"))],
        differentiable=True,
    ),
    dict(
        name="digit-box",
        factory=lazy("guides", "digit_box_guide"),
        description="Digits: object-location guidance, L1 + GIoU of a small box detector to a target box (+ class CE)",
        params=[Param("box", "str", None, 'target box "x0,y0,x1,y1" in canvas pixels 0..32', required=True,
                      example="4,4,20,28"),
                Param("label", "int", None, "optional digit class 0..9 the detector should also see"),
                Param("weights", "path", None, _WEIGHTS.format(net="digit_detector"))],
        differentiable=True,
    ),
    dict(
        name="digit-id",
        factory=lazy("guides", "digit_id_guide"),
        description="Digits: identity guidance (face-recognition analogue), 1 - cosine of instance embeddings",
        params=[_REF, _IMAGE, Param("weights", "path", None, _WEIGHTS.format(net="digit_id"))],
        differentiable=True,
    ),
    dict(
        name="digit-style",
        factory=lazy("guides", "digit_style_guide"),
        description="Digits: style guidance, Gram-matrix distance on the digit classifier's conv feature maps",
        params=[_REF, _IMAGE,
                Param("layers", "str", STYLE_LAYERS, "comma-separated conv blocks 1..6 whose Gram matrices count"),
                Param("weights", "path", None, _WEIGHTS.format(net="digit_classifier"))],
        differentiable=True,
    ),
    dict(
        name="inpaint",
        factory=lazy("guides", "inpaint_guide"),
        description="Model-free inpainting: squared error to a reference on the known pixels (compose with other guides)",
        params=[_REF, _IMAGE,
                Param("region", "str", None, "the KNOWN half of the canvas", choices=REGIONS, example="left"),
                Param("mask", "path", None, "known-pixel mask PNG (known = bright), instead of region")],
        differentiable=True,
    ),
    dict(
        name="digit-hard",
        factory=lazy("guides", "digit_hard_guide"),
        description="Digits: non-differentiable label guide (argmax hit + probability, no autograd) for the zeroth-order path",
        params=_label_params("digit_classifier"),
        differentiable=False,
    ),
]

# classifier guidance (ugd_digits.noisy_classifier): registered after GUIDES
NOISY_GUIDE: dict[str, Any] = dict(
    name="digit-noisy",
    example="--guide digit-noisy:label=3 --preset digits-classifier-guidance",
    factory=lazy("noisy_classifier", "digit_noisy_guide"),
    description="Digits: classifier guidance (Dhariwal & Nichol 2021) with a noise-aware classifier p(y | z_t, t) "
    "trained on noised train digits; timestep-aware, use --preset digits-classifier-guidance",
    params=[
        Param("label", "int", None, "target digit class 0..9", required=True),
        Param("weights", "path", None, "noisy_classifier .safetensors (default: the plugin's trained weights)"),
    ],
    differentiable=True,
)

# s of eq. 14, picked on pilot seeds 500+ by the guide's own classifier at t = 0 (compare_classifier_guidance --pilot).
CLASSIFIER_SCALE = 10.0
NOISY_PRESET: tuple[str, dict[str, Any], str] = (
    "Digits classifier guidance (Dhariwal & Nichol 2021): the noise-aware digit-noisy guide on z_t, "
    f"eps - s sqrt(1-a_t) grad log p(y|z_t,t), s={CLASSIFIER_SCALE:g}, DDIM (eta=0), no backward guidance or recurrence",
    dict(forward_strength=CLASSIFIER_SCALE, forward_schedule="sqrt_1m_abar", forward_input="zt"),
    "Dhariwal & Nichol 2021 eq. 14 / Alg. 2; s chosen on pilot seeds 500+ by the guide's own classifier at t=0",
)
