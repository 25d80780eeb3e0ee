"""The default preset (auto) on the digits backbone: a guide's loss in other units (x 1e-3 ... x 1e3) gives the
same images, and in a composition ``weight`` is a share of the step, whichever loss is larger.

The mechanism is exact: in float64 (backbone, guides and chain) the images agree to 1e-10 (measured <= 5e-14).
In float32 they do not always agree to the pixel: where the classifier is saturated its loss and gradient sit
at float32's rounding floor, so the scaled loss's rounding can flip a line-search decision. There the tests
check the task metric instead (the goal's fallback for a mechanism that is not exactly invariant)."""

from dataclasses import replace

import pytest
import torch

from ugd_core import SamplerConfig, sample
from ugd_core.registry import get_registry

REG = get_registry()
CFG = SamplerConfig(**dict(REG.get("preset", "auto").settings, num_steps=5))  # recurrence active at step 1 and 2
LABEL = ("digit-robust", {"label": "4"}, 1.0)
BOX = ("digit-box", {"box": "6,4,22,28"}, 2.0)


@pytest.fixture(scope="module")
def backbone():
    return REG.build("backbone", "digits", {})


def guides(parts_scales):
    """(guide, weight) pairs from (name, params, weight) and a loss multiplier each."""
    out = []
    for (name, params, weight), scale in parts_scales:
        g = REG.build("guide", name, params)
        out.append((replace(g, loss_fn=lambda o, t, f=g.loss_fn, c=scale: c * f(o, t)), weight))
    return out


@pytest.fixture(scope="module")
def backbone64():
    b = REG.build("backbone", "digits", {})
    b.unet.double()
    return b


def run(backbone, parts_scales):
    dtype = next(backbone.unet.parameters()).dtype
    gs = guides(parts_scales)
    for g, _ in gs:
        for m in getattr(g, "modules", ()):
            m.to(dtype)
    z = torch.randn(2, *backbone.sample_shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    return sample(backbone, gs, CFG, num_images=2, seed=1000, latents=z).images


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_the_label_guides_loss_scale_does_not_change_the_images(backbone, backbone64, c):
    ref64 = run(backbone64, [(LABEL, 1.0)])
    assert ref64.dtype == torch.float64
    assert (run(backbone64, [(LABEL, c)]) - ref64).abs().max() <= 1e-10


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_in_float32_the_label_guides_loss_scale_keeps_the_drawn_digits(backbone, c):
    """In float32 a saturated classifier's loss sits at the rounding floor, where the line search's accept or
    reject can go either way (the images then differ in places): the claim is the goal's fallback, the task
    metric. Every sample keeps its class by the development nearest-neighbour judge (no learned features)."""
    from ugd_digits.judges import development_judge

    judge = development_judge()
    ref, scaled = judge.judge(run(backbone, [(LABEL, 1.0)])), judge.judge(run(backbone, [(LABEL, c)]))
    assert torch.equal(ref.pred, scaled.pred) and torch.equal(ref.is_digit, scaled.is_digit)


def test_weights_are_shares_whichever_loss_is_larger(backbone64):
    one = run(backbone64, [(LABEL, 1e3), (BOX, 1e-3)])
    other = run(backbone64, [(LABEL, 1e-3), (BOX, 1e3)])
    label_only = run(backbone64, [(LABEL, 1.0)])
    assert (one - other).abs().max() <= 1e-10
    assert (one - label_only).abs().max() > 1e-2  # the box guide does act


def test_in_float32_the_composition_keeps_its_box_metric(backbone):
    """In float32 the saturated label guide's rounding can flip a line-search decision (the images then differ
    visibly in places), so the claim is the goal's fallback: the task metric (box IoU) moves by <= 0.02."""
    from ugd_digits.data import box_iou, foreground_mask, tight_boxes

    target = torch.tensor([[6.0, 4.0, 22.0, 28.0]]).expand(2, 4)
    iou = [box_iou(tight_boxes(foreground_mask(run(backbone, parts))), target).mean().item()
           for parts in ([(LABEL, 1e3), (BOX, 1e-3)], [(LABEL, 1e-3), (BOX, 1e3)])]
    assert abs(iou[0] - iou[1]) <= 0.02, iou
