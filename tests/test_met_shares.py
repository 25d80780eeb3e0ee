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


@pytest.mark.parametrize("knobs", [{}, dict(guide_met_steps="forward", guide_met_conflict=1.0)])
def test_one_guide_is_grad_bit_for_bit(knobs):
    assert torch.equal(run([quadratic("pull", 0.9)], "met", **knobs), run([quadratic("pull", 0.9)], "grad"))


def test_with_two_guides_a_met_guide_yields():
    """The same chain with ``met`` differs from ``grad`` once a guide is met: at tau = 0.5 the guide pulling toward
    0.3, near the backbone's own mean (0.5), is met within the first steps (its loss from 0.039 to below 0.019) and
    yields; the images end nearer the other guide's target, -0.8 (mean 0.188 against 0.212 when measured)."""
    pair = [quadratic("easy", 0.3), quadratic("hard", -0.8)]
    met, grad = run(pair, "met", guide_met_below=0.5), run(pair, "grad")
    assert met.mean() < grad.mean() - 0.01


@pytest.mark.parametrize("knobs", [dict(guide_met_below=0.5), dict(guide_met_below=0.5, guide_met_conflict=1.0),
                                   dict(guide_met_below=1.0, forward_strength=1.0, guide_met_steps="forward", guide_met_conflict=1.0)])
@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_a_guides_loss_scale_does_not_change_a_composition(c, knobs):
    """In the chain where a guide yields (it differs from ``grad``'s), float64 throughout: a float64 loss keeps its
    precision in ``guide_loss``, so the shares' loss ratios do not change; nor do the conflict's unit-RMS cosines."""
    base = run([quadratic("easy", 0.3), quadratic("hard", -0.8)], "met", torch.float64, **knobs)
    scaled = run([quadratic("easy", 0.3, scale=c), quadratic("hard", -0.8)], "met", torch.float64, **knobs)
    grad_knobs = {k: v for k, v in knobs.items() if k == "forward_strength"}
    assert (base - run([quadratic("easy", 0.3), quadratic("hard", -0.8)], "grad", torch.float64, **grad_knobs)).abs().max() > 1e-3
    assert (scaled - base).abs().max() <= 1e-10


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_a_met_level_outside_0_1_is_one_line(bad):
    with pytest.raises(UgdError, match="guide_met_below must lie in"):
        SamplerConfig(guide_normalize="met", guide_met_below=bad)


def unit_pair(cos: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit-RMS images [1, 1, 2, 2] whose mean product is exactly ``cos``: e = (1, 1, -1, -1), f = (1, -1, 1, -1)
    (orthogonal, each unit RMS), u1 = e and u2 = cos e + sqrt(1 - cos^2) f."""
    e = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64).view(1, 1, 2, 2)
    f = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64).view(1, 1, 2, 2)
    return e, cos * e + (1 - cos**2) ** 0.5 * f


@pytest.mark.parametrize("kappa, cos, weights, expected", [
    (1.0, -0.4, (1.0, 1.0), 0.4),    # the climb cancelled: share 0.1 raised to 0.4
    (1.0, 0.3, (1.0, 1.0), 0.1),     # the other guide's descent lowers this one's loss too: it yields as met does
    (1.0, 0.0, (1.0, 1.0), 0.1),     # orthogonal: as met does
    (1.0, -0.4, (2.0, 1.0), 0.8),    # the climb is in units of the yielding guide's weight: 2 x 0.4 / 1
    (1.0, -0.9, (2.0, 1.0), 1.0),    # capped at a full share
    (1.0, -0.4, (1.0, -1.0), 0.1),   # a guide pushed away never yields, and is left as it is
    (2.0, -0.4, (1.0, 1.0), 0.8),    # kappa times what cancels the climb
    (2.0, -0.05, (1.0, 1.0), 0.1),   # a slight conflict: 2 x 0.05 = 0.1, no more than met's own share
    (4.0, -0.3, (1.0, 1.0), 1.0),    # 1.2, capped
])
def test_a_yielding_guide_keeps_kappa_times_the_share_that_cancels_its_climb(kappa, cos, weights, expected):
    """keep_conflict in closed form: shares (1, 0.1), the second guide's floor -kappa w_1 <u_1, u_2> / w_2, capped at 1."""
    held = HeldScales("met", conflict=kappa)
    u1, u2 = unit_pair(cos)
    shares = held.keep_conflict([torch.ones(1, dtype=torch.float64), torch.full((1,), 0.1, dtype=torch.float64)], [u1, u2], weights)
    assert torch.equal(shares[0], torch.ones(1, dtype=torch.float64))
    assert torch.allclose(shares[1], torch.full((1,), expected, dtype=torch.float64), atol=1e-12)


def test_without_the_conflict_knob_the_shares_are_left_alone():
    shares = [torch.ones(1), torch.full((1,), 0.1)]
    assert HeldScales("met").keep_conflict(shares, list(unit_pair(-0.9)), (1.0, 1.0)) is shares


def test_a_met_guide_that_the_other_would_climb_keeps_its_share():
    """Two squared errors from x = 0 that pull opposite ways: to 1 (loss 1) and to -0.01 (loss 1e-4, met: y = 0.01).
    Their unit-RMS gradients are -1 and +1 everywhere (cosine -1). ``met`` gives -(1 - 0.01); with
    ``guide_met_conflict=1`` the met guide keeps its full share and the two cancel: the gradient is 0."""
    guides = as_guide_set([quadratic("far", 1.0), quadratic("near", -0.01)])
    x = torch.zeros(1, *SHAPE)
    for kappa, expected in ((0.0, -0.99), (1.0, 0.0)):
        held = HeldScales("met", met_below=0.01, conflict=kappa)
        held.shares([torch.ones(1), torch.ones(1)])
        _, g = loss_and_grad(guides, x, [torch.Generator()], GuidanceStats(), normalize=True, held=held)
        assert torch.allclose(g, torch.full_like(x, expected), atol=1e-6)


def test_a_met_guide_that_is_climbed_holds_the_images():
    """The chain of ``test_with_two_guides_a_met_guide_yields``: the easy guide (toward 0.3) is met and yields, and the
    hard one's pull toward -0.8 climbs it. With ``guide_met_conflict=1`` it keeps the share that cancels the climb,
    and the images end nearer where ``grad`` leaves them than ``met`` does."""
    pair = [quadratic("easy", 0.3), quadratic("hard", -0.8)]
    kept, met, grad = run(pair, "met", guide_met_below=0.5, guide_met_conflict=1.0), run(pair, "met", guide_met_below=0.5), run(pair, "grad")
    assert kept.mean() > met.mean() + 0.02
    assert (kept.mean() - grad.mean()).abs() < (met.mean() - grad.mean()).abs()


PAIR = [quadratic("easy", 0.3), quadratic("hard", -0.8)]
# a chain where the forward step alone meets the easy guide: DSG's full turn (rate 1), met below any fall from the start
FULL_TURN = dict(forward_strength=1.0, guide_met_below=1.0)


def test_forward_only_without_a_forward_step_is_grad_bit_for_bit():
    """``guide_met_steps="forward"``: met's shares act only on the forward step, so with the forward step off the
    backward steps are ``grad``'s (equal shares, pareto with no allowance), bit for bit."""
    off = dict(guide_met_below=0.5, forward_strength=0.0)
    assert torch.equal(run(PAIR, "met", guide_met_steps="forward", **off), run(PAIR, "grad", **off))
    assert not torch.equal(run(PAIR, "met", **off), run(PAIR, "grad", **off))  # met in the backward steps does move them


def test_forward_only_without_backward_steps_is_met_bit_for_bit():
    off = dict(FULL_TURN, backward_steps=0, backward_final_steps=0)
    assert torch.equal(run(PAIR, "met", guide_met_steps="forward", **off), run(PAIR, "met", **off))
    assert not torch.equal(run(PAIR, "met", **off), run(PAIR, "grad", **off))  # the forward step's shares do move them


def test_forward_only_differs_from_both_and_scores_backward_steps_afresh():
    """With both steps on, the forward-only chain is neither ``met``'s nor ``grad``'s, and its backward steps do not
    reuse the forward step's (share-weighted) gradient at x0_hat."""
    fwd = run(PAIR, "met", guide_met_steps="forward", **FULL_TURN)
    assert (fwd - run(PAIR, "met", **FULL_TURN)).abs().max() > 1e-2
    assert (fwd - run(PAIR, "grad", forward_strength=1.0)).abs().max() > 1e-2
    assert (run(PAIR, "met", guide_met_steps="forward", guide_met_conflict=1.0, **FULL_TURN) - fwd).abs().max() > 1e-2
    from ugd_core.sampler import StepKnobs, UniversalGuidance

    k = StepKnobs(forward_strength=0.2, backward_steps=3, backward_lr=0.03, recurrence=1, smoothing_std=0.0)
    for steps, reuses in (("all", True), ("forward", False)):
        cfg = SamplerConfig(**dict(PRESETS["auto"][1], guide_normalize="met", guide_met_steps=steps))
        ug = UniversalGuidance(testing.gaussian_backbone(0.5, 0.5, SHAPE), as_guide_set(PAIR), cfg, [torch.Generator()])
        assert ug.reuses_forward_loss(k) is reuses


@pytest.mark.parametrize("knobs, message", [
    (dict(guide_normalize="grad", guide_met_steps="forward"), "guide_met_steps=forward sets how a met guide yields: it needs guide_normalize=met"),
    (dict(guide_normalize="grad", guide_met_conflict=1.0), "guide_met_conflict=1.0 sets how a met guide yields: it needs guide_normalize=met"),
    (dict(guide_normalize="met", guide_met_conflict=-1.0), "guide_met_conflict must be >= 0.0"),
    (dict(guide_normalize="met", guide_met_steps="backward"), "guide_met_steps='backward' is not one of all, forward"),
])
def test_the_met_knobs_refuse_bad_input_in_one_line(knobs, message):
    with pytest.raises(UgdError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SamplerConfig(**knobs)
