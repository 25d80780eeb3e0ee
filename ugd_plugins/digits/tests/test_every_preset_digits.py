"""Every registered preset (every installed plugin's) runs finite on the digits backbone and on digits-flow, a
few steps, with the README's label guide; and each guided preset moves the samples away from unguided ones."""

import pytest
import torch

from ugd_core import SamplerConfig, sample
from ugd_core.registry import load_registry

REGISTRY = load_registry()
PRESET_NAMES = sorted(REGISTRY.entries["preset"])


@pytest.fixture(scope="module", params=["digits", "digits-flow"])
def backbone(request):
    return REGISTRY.build("backbone", request.param, {})


@pytest.fixture(scope="module")
def guide():
    return REGISTRY.build("guide", "digit-robust", {"label": "3"})


def test_the_preset_list_covers_the_default_and_the_peers():
    assert {"auto", "auto-eps", "dsg", "ugd", "dps", "freedom", "mpgd", "lgd", "tfg", "digits-full"} <= set(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_is_finite_on_the_digits_backbones(backbone, guide, name):
    settings = dict(REGISTRY.get("preset", name).settings, num_steps=3)
    settings["recurrence"] = min(settings.get("recurrence", 1), 2)  # the same code path at less cost
    cfg = SamplerConfig(**settings)
    out = sample(backbone, guide, cfg, num_images=1, seed=7)
    assert torch.isfinite(out.images).all() and torch.isfinite(out.latents).all()
    plain = sample(backbone, None, cfg, num_images=1, seed=7)
    assert (out.images - plain.images).abs().max() > 1e-3, f"{name} did not guide"
