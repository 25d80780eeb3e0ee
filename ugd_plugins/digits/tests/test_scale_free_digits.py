"""The default preset (auto) on the digits backbone: a guide's loss in other units (x 1e-3 ... x 1e3) gives the
same images to 1e-4, and in a composition ``weight`` is a share of the step, whichever loss is larger."""

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


def run(backbone, parts_scales):
    return sample(backbone, guides(parts_scales), CFG, num_images=2, seed=1000).images


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_the_label_guides_loss_scale_does_not_change_the_images(backbone, c):
    ref = run(backbone, [(LABEL, 1.0)])
    assert (run(backbone, [(LABEL, c)]) - ref).abs().max() <= 1e-4


def test_weights_are_shares_whichever_loss_is_larger(backbone):
    one = run(backbone, [(LABEL, 1e3), (BOX, 1e-3)])
    other = run(backbone, [(LABEL, 1e-3), (BOX, 1e3)])
    label_only = run(backbone, [(LABEL, 1.0)])
    assert (one - other).abs().max() <= 1e-4
    assert (one - label_only).abs().max() > 1e-2  # the box guide does act
