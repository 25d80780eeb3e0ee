"""Three kernel promises a mutation audit found broken, now kept (each test failed on the code before the fix). A negative
weight asks for a guide's loss to rise (docs/algorithm.md, backward_merit "pareto": "a guide with a negative weight,
which asks for its loss to rise"; tests/test_scale_free.py test_a_negative_weight_takes_backward_steps): polyak keeps
such a guide's part and backward_compose="add" keeps the step's direction; and a one-step flow chain takes no forward
guidance at pure noise."""

from __future__ import annotations

import torch

from ugd_core import SamplerConfig, make_guide
from ugd_core import testing
from ugd_core.presets import PRESETS

AUTO = PRESETS["auto"][1]


def power(target: float, name: str, p: int = 2):
    return make_guide(name, f=lambda x: x, target=target, loss=lambda out, y: (out - y).abs().pow(p).flatten(1).sum(1))


def step(guides, **knobs) -> torch.Tensor:
    cfg = SamplerConfig(**dict(AUTO, backward_steps=1, backward_lr=0.1, backward_backtrack=0, backward_merit="point", **knobs))
    return testing.one_backward_step(cfg, guides, torch.zeros(1, 2, 2, 2, dtype=torch.float64))


def test_polyak_keeps_a_negatively_weighted_guides_part_far_from_its_zero():
    """backward_normalize=polyak: "guide i's part w_i ∇l_i / r_i of the step weighted by min(1, ρ_i/λ),
    ρ_i = l_i / (n RMS(∇_x̂0 l_i))", and "far from a guide's zero the step is `grad`'s, bit for bit" (docs/algorithm.md,
    Scale-free table and "Steps that stop at a guide's zero"); polyak_shares: ρ_i "whatever the guide's normaliser and
    weight". From x = 0 guides to 0.9 (weight 1, ρ = 0.45) and to -0.5 (weight -1, ρ = 0.25) are both far from their
    zero at λ = 0.1: the step is grad's, 0.1 a pixel (the code took ρ from the weighted term, negative for weight -1, so
    that guide's share was 0 and the step half as long)."""
    guides = [(power(0.9, "a"), 1.0), (power(-0.5, "b"), -1.0)]
    assert torch.allclose(step(guides, backward_normalize="grad"), torch.full((1, 2, 2, 2), 0.1, dtype=torch.float64))
    assert torch.allclose(step(guides, backward_normalize="polyak"), step(guides, backward_normalize="grad"))


def test_added_steps_of_negatively_weighted_guides_push_their_losses_up():
    """backward_compose=add: "each guide steps about as far as it would alone where the gradients are orthogonal,
    twice as far where they agree" (docs/algorithm.md, backward_compose). Two guides that both ask for their loss to
    rise (weights -1, -1) must step away from their targets (0.9 and 0.5, from x = 0: a negative step), as `share` and
    one guide alone do (the gain divided by max_i w_i = -1 turned the step round: +0.2 a pixel; now max_i |w_i|)."""
    guides = [(power(0.9, "a"), -1.0), (power(0.5, "b", 3), -1.0)]
    assert bool((step(guides, backward_compose="share") < 0).all())  # away from both targets
    assert bool((step([(power(0.9, "a"), -1.0)], backward_compose="add") < 0).all())  # one guide alone
    assert bool((step(guides, backward_compose="add") < 0).all())


def test_a_one_step_flow_chain_gets_no_forward_strength_at_pure_noise():
    """Flows: "Forward guidance at σ = 1 (a_t = 0) ... the `abar_normalized` and `increase` schedules give it zero
    strength there" (docs/algorithm.md, Flow models, "What ugd does with it"). A one-step flow chain is that step alone
    (a_t = 0, a_prev = 1: σ from 1 to 0); raw values of mean 0 were rescaled to 1.0, full strength where the docs
    promise none."""
    from ugd_core.schedules import schedule_values

    assert schedule_values("increase", [1000], [0.0], [1.0]) == [0.0]
    assert schedule_values("abar_normalized", [1000], [0.0], [1.0]) == [0.0]
