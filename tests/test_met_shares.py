"""A met guide yields its share of the step (``guide_normalize="met"``, docs/algorithm.md, "A met guide yields"):
closed forms for the shares, the gradient they weight, one guide bit for bit ``grad``, and loss-scale invariance."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core import testing
from ugd_core.errors import UgdError
from ugd_core.gradients import GuidanceStats, HeldScales, loss_and_grad
from ugd_core.guidance import as_guide_set
from ugd_core.presets import PRESETS

SHAPE = (1, 4, 4)


def test_shares_in_closed_form():
    """tau = 0.01, starts (1, 10): a loss of 0.001 is a tenth of the way to met (y = 0.001 / 0.01 = 0.1), a loss of
    5 is far from it (y = 1): shares (0.1, 1). When the first rises back above tau times its start, both are 1;
    when both are met, the less-met one gets 1 and the other its ratio to it."""
    held = HeldScales("met", met_below=0.01)
    t = torch.tensor
    held.shares([t([1.0]), t([10.0])])  # the run's first evaluation: the starts
    assert torch.allclose(torch.stack(held.shares([t([0.001]), t([5.0])])), t([[0.1], [1.0]]))
    assert torch.equal(torch.stack(held.shares([t([0.02]), t([5.0])])), t([[1.0], [1.0]]))
    assert torch.allclose(torch.stack(held.shares([t([0.002]), t([0.05])])), t([[0.2 / 0.5], [1.0]]))
    assert torch.equal(torch.stack(held.shares([t([0.0]), t([0.0])])), t([[1.0], [1.0]]))  # all met: no 0 / 0


def test_a_start_that_is_not_a_positive_loss_never_yields():
    held = HeldScales("met", met_below=0.01)
    held.shares([torch.tensor([-1.0, float("nan")]), torch.tensor([1.0, 1.0])])
    share, other = held.shares([torch.tensor([-1e-9, 1e-9]), torch.tensor([1e-6, 1e-6])])
    assert torch.equal(share, torch.ones(2)) and torch.allclose(other, torch.full((2,), 1e-4))


def test_one_guide_or_another_mode_has_no_shares():
    assert HeldScales("met").shares([torch.ones(3)]) is None
    assert HeldScales("first").shares([torch.ones(3), torch.ones(3)]) is None


def quadratic(name: str, target: float, scale: float = 1.0):
    return make_guide(name, f=lambda x: x, loss=lambda out, y: scale * ((out - y) ** 2).flatten(1).mean(1),
                      target=torch.full((1, *SHAPE), target))


def test_the_gradient_is_each_unit_rms_gradient_times_its_share():
    """Two squared errors from x = 0: to 1 (loss 1) and to 0.01 (loss 1e-4). Each unit-RMS gradient is -1 (constant
    image); with starts (1, 1) and tau = 0.01 the second is met a hundredth of the way (y = 1e-4 / 0.01 = 0.01): the
    gradient is -(1 + 0.01) everywhere, against -2 with ``grad``."""
    guides = as_guide_set([quadratic("far", 1.0), quadratic("near", 0.01)])
    x = torch.zeros(1, *SHAPE)
    held = HeldScales("met", met_below=0.01)
    held.shares([torch.ones(1), torch.ones(1)])
    _, g = loss_and_grad(guides, x, [torch.Generator()], GuidanceStats(), normalize=True, held=held)
    assert torch.allclose(g, torch.full_like(x, -1.01))
    _, g_grad = loss_and_grad(guides, x, [torch.Generator()], GuidanceStats(), normalize=True)
    assert torch.allclose(g_grad, torch.full_like(x, -2.0))


def run(guides, mode: str, dtype=torch.float32, **knobs) -> torch.Tensor:
    cfg = SamplerConfig(**dict(PRESETS["auto"][1], num_steps=6, guide_normalize=mode, **knobs))
    backbone = testing.gaussian_backbone(0.5, 0.5, SHAPE)
    z = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return sample(backbone, guides, cfg, num_images=3, seed=7, latents=z).images


def test_one_guide_is_grad_bit_for_bit():
    assert torch.equal(run([quadratic("pull", 0.9)], "met"), run([quadratic("pull", 0.9)], "grad"))


def test_with_two_guides_a_met_guide_yields():
    """The same chain with ``met`` differs from ``grad`` once a guide is met: at tau = 0.5 the guide pulling toward
    0.3, near the backbone's own mean (0.5), is met within the first steps (its loss from 0.039 to below 0.019) and
    yields; the images end nearer the other guide's target, -0.8 (mean 0.188 against 0.212 when measured)."""
    pair = [quadratic("easy", 0.3), quadratic("hard", -0.8)]
    met, grad = run(pair, "met", guide_met_below=0.5), run(pair, "grad")
    assert met.mean() < grad.mean() - 0.01


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_a_guides_loss_scale_does_not_change_a_composition(c):
    """In the chain where a guide yields (it differs from ``grad``'s), float64 throughout: a float64 loss keeps its
    precision in ``guide_loss``, so the shares' loss ratios do not change."""
    knobs = dict(guide_met_below=0.5)
    base = run([quadratic("easy", 0.3), quadratic("hard", -0.8)], "met", torch.float64, **knobs)
    scaled = run([quadratic("easy", 0.3, scale=c), quadratic("hard", -0.8)], "met", torch.float64, **knobs)
    assert (base - run([quadratic("easy", 0.3), quadratic("hard", -0.8)], "grad", torch.float64)).abs().max() > 1e-3
    assert (scaled - base).abs().max() <= 1e-10


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_a_met_level_outside_0_1_is_one_line(bad):
    with pytest.raises(UgdError, match="guide_met_below must lie in"):
        SamplerConfig(guide_normalize="met", guide_met_below=bad)
