"""Backward steps no longer than each guide's Polyak step (``backward_normalize="polyak"``, docs/algorithm.md):
closed forms on a masked squared error, where Polyak's step l g / ||g||^2 moves the known pixels exactly half
way to their target (l = mean(M (x - y)^2): g = 2 M (x - y) / n, ||g||^2 = 4 sum(M (x - y)^2) / n^2)."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core import testing
from ugd_core.backbones import default_scheduler
from ugd_core.errors import UgdError
from ugd_core.gradients import Smoothing
from ugd_core.guidance import as_guide_set
from ugd_core.presets import PRESETS
from ugd_core.sampler import StepKnobs, UniversalGuidance, polyak_shares, polyak_shortened

SHAPE = (2, 4, 4)
KNOWN = (torch.arange(16) < 8).view(1, 1, 4, 4).expand(1, *SHAPE).float()  # the first two rows known
TARGET = torch.linspace(-1, 1, 32).view(1, *SHAPE)


def masked(scale: float = 1.0, known: torch.Tensor = KNOWN, name: str = "inpaint"):
    return make_guide(name, f=lambda x: x, loss=lambda out, y: scale * ((out - y) ** 2 * known).flatten(1).mean(1), target=TARGET)


def backward(guides, lr: float, steps: int, mode: str = "polyak", **knobs) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, delta) of one backward guidance call from x0_hat = 0 for three samples."""
    cfg = SamplerConfig(**dict(guide_normalize="grad", backward_normalize=mode, backward_steps=steps, backward_lr=lr, **knobs))
    run = UniversalGuidance(testing.gaussian_backbone(0.0, 1.0, SHAPE, default_scheduler()), as_guide_set(guides), cfg,
                            [torch.Generator()])
    x0 = torch.zeros(3, *SHAPE)
    k = StepKnobs(forward_strength=0.0, backward_steps=steps, backward_lr=lr, recurrence=1, smoothing_std=0.0)
    return x0, run.backward_guidance(x0, torch.zeros(3, dtype=torch.long), k, Smoothing())


@pytest.mark.parametrize("c", [1e-3, 1.0, 1e3])
def test_one_step_under_a_large_cap_moves_the_known_pixels_half_way_whatever_the_loss_scale(c):
    x0, delta = backward(masked(c), lr=10.0, steps=1)
    expected = 0.5 * KNOWN * (TARGET - x0)  # unknown pixels untouched
    assert torch.allclose(delta, expected, atol=1e-6)


def test_under_a_short_cap_the_step_is_grads_bit_for_bit():
    """Far from the guide's zero (rho > lr) the Polyak step is the unit-RMS step of length lr."""
    polyak, grad = backward(masked(), lr=0.01, steps=2, mode="polyak")[1], backward(masked(), lr=0.01, steps=2, mode="grad")[1]
    assert torch.equal(polyak, grad)


def test_line_searched_polyak_steps_converge_where_fixed_steps_stall():
    """Ten line-searched steps: Polyak's halve the residual each time (4^-10 of the squared error); steps of fixed
    length 0.5 (RMS) overshoot once the residual is shorter and settle near their own size."""
    knobs = dict(backward_backtrack=1, backward_merit="pareto")
    start = ((TARGET ** 2) * KNOWN).sum() / KNOWN.sum()

    def error(mode):
        _, delta = backward(masked(), lr=0.5, steps=10, mode=mode, **knobs)
        return float((((delta - TARGET) ** 2) * KNOWN).sum() / (3 * KNOWN.sum()))

    assert error("polyak") <= float(start) * 4.0**-10 * 1.01
    assert error("grad") > 100 * error("polyak")


def test_a_guide_at_its_zero_takes_no_part_in_the_step():
    """Two guides on disjoint halves; the first already meets its target: the step is the second's Polyak step alone."""
    left, right = KNOWN, 1 - KNOWN
    met = make_guide("met", f=lambda x: x, loss=lambda out, y: ((out - y) ** 2 * left).flatten(1).mean(1), target=torch.zeros(1, *SHAPE))
    x0, delta = backward([met, masked(known=right, name="right")], lr=10.0, steps=1)
    assert torch.allclose(delta, 0.5 * right * (TARGET - x0), atol=1e-6)


def test_the_default_with_polyak_steps_does_not_depend_on_the_loss_scale():
    """Polyak's step shortens the step in this chain (5 of 51 evaluations, shares down to 0.04): the images differ
    from grad's by 0.021."""
    cfg = SamplerConfig(**dict(PRESETS["auto"][1], backward_normalize="polyak", num_steps=8))
    backbone = testing.gaussian_backbone(0.2, 0.5, SHAPE, default_scheduler())
    a = sample(backbone, masked(), cfg, num_images=3, seed=5).images
    b = sample(backbone, masked(1e3), cfg, num_images=3, seed=5).images
    c = sample(backbone, masked(1e-3), cfg, num_images=3, seed=5).images
    assert (a - b).abs().max() <= 1e-4 and (a - c).abs().max() <= 1e-4 and torch.isfinite(a).all()
    assert (a - sample(backbone, masked(), cfg.updated(backward_normalize="grad"), num_images=3, seed=5).images).abs().max() > 1e-2


def test_polyak_needs_each_guides_own_loss():
    with pytest.raises(UgdError, match="backward_normalize=polyak"):
        SamplerConfig(backward_normalize="polyak", smoothing_reduce="log_mean_exp")


def test_each_part_is_weighted_by_its_share_and_a_met_loss_keeps_none():
    parts = torch.randn(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    terms = torch.tensor([[0.5, 1e-4, 3.0], [0.0, 2.0, -1.0]])
    shares = polyak_shares(terms, parts, 0.1)
    short, _ = polyak_shortened(terms, parts, 0.1, torch.ones(3))
    assert torch.allclose(short, (shares.view(2, 3, 1, 1, 1) * parts).sum(0))
    assert shares[1, 0] == 0 and shares[1, 2] == 0 and 0 < shares[0, 1] < 1 and shares[0, 2] == 1
