"""The default preset (auto) on the digits backbone: a guide's loss in other units (x 1e-3 ... x 1e3) gives the
same images to 1e-4, and in a composition ``weight`` is a share of the step, whichever loss is larger."""

from dataclasses import replace

import pytest
import torch

from cli.run import build_guide
from ugd_core import SamplerConfig, sample
from ugd_core.registry import get_registry

REG = get_registry()
CFG = SamplerConfig(**dict(REG.get("preset", "auto").settings, num_steps=5))  # recurrence active at step 1 and 2
BOX = 'digit-box:box="6,4,22,28"'


@pytest.fixture(scope="module")
def backbone():
    return REG.build("backbone", "digits", {})


def guides(specs_scales):
    out = []
    for spec, scale in specs_scales:
        item = build_guide(spec, REG)[0]
        g = replace(item.guide, loss_fn=lambda o, t, f=item.guide.loss_fn, c=scale: c * f(o, t))
        out.append(type(item)(g, item.weight))
    return out


def run(backbone, specs_scales):
    return sample(backbone, guides(specs_scales), CFG, num_images=2, seed=1000).images


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_the_label_guides_loss_scale_does_not_change_the_images(backbone, c):
    ref = run(backbone, [("digit-robust:label=4", 1.0)])
    assert (run(backbone, [("digit-robust:label=4", c)]) - ref).abs().max() <= 1e-4


def test_weights_are_shares_whichever_loss_is_larger(backbone):
    one = run(backbone, [("digit-robust:label=4", 1e3), (BOX + ",weight=2", 1e-3)])
    other = run(backbone, [("digit-robust:label=4", 1e-3), (BOX + ",weight=2", 1e3)])
    label_only = run(backbone, [("digit-robust:label=4", 1.0)])
    assert (one - other).abs().max() <= 1e-4
    assert (one - label_only).abs().max() > 1e-2  # the box guide does act
