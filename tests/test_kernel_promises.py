"""The sampling kernel's smaller promises (Algorithm 1 in ugd_core/sampler.py, gradients.py, schedules.py, noise.py;
docs/algorithm.md): windows are half-open fractions of the chain, each knob follows its own schedule, the forward
floor is inclusive, the line search keeps only a strict fall and stops a sample that found none, merits and shares
are as written, the unit-RMS normaliser is per sample (zero-order guides included), probes are fresh unless
shared, and each seed owns its noise. Everything here is a closed form on tiny tensors (well under a second)."""

from __future__ import annotations

import functools

import pytest
import torch

from ugd_core import SamplerConfig, make_guide
from ugd_core import testing
from ugd_core.backbones import default_scheduler
from ugd_core.gradients import GuidanceStats, HeldScales, Smoothing, loss_and_grad, per_sample_rms
from ugd_core.guidance import as_guide_set
from ugd_core.noise import make_generators, randn
from ugd_core.presets import PRESETS
from ugd_core.sampler import NoiseSchedule, Scored, StepKnobs, UniversalGuidance

AUTO = PRESETS["auto"][1]


def quad(target: float, name: str = "quad", scale: float = 1.0, differentiable: bool = True):
    return make_guide(name, f=lambda x: x, loss=lambda out, y: scale * (out - y).pow(2).flatten(1).sum(1), target=target,
                      differentiable=differentiable)


def backbone():
    return testing.gaussian_backbone(0.5, 0.6, (2, 2, 2), default_scheduler())


def knobs_of(steps: int = 10, guides=None, **knobs) -> tuple[NoiseSchedule, list[StepKnobs]]:
    chain = NoiseSchedule.from_scheduler(default_scheduler(), steps)
    cfg = SamplerConfig(**dict(num_steps=steps, **knobs))
    run = UniversalGuidance(backbone(), as_guide_set(guides if guides is not None else quad(0.9)), cfg, [])
    return chain, run.step_knobs(chain)


def guidance(n: int = 1, guides=None, **knobs) -> UniversalGuidance:
    return UniversalGuidance(backbone(), as_guide_set(guides if guides is not None else quad(0.9)),
                             SamplerConfig(**dict(AUTO, **knobs)), make_generators(range(n)))


# -- windows, floors and schedules per step ------------------------------------------------------------------------


def test_windows_are_half_open_fractions_of_the_chain():
    """A window (start, end) covers the steps i with start <= i / n < end (schedules.in_window: "[start, end)"), so
    first-half and second-half windows (docs/tune.md, "windows") split a 10-step chain at step 5 without overlap; and
    each knob reads its own window (docs/algorithm.md, Knobs: forward_window, backward_window, recurrence_window)."""
    _, ks = knobs_of(10, forward_strength=0.1, forward_window=(0.0, 0.5), backward_steps=2, backward_window=(0.5, 1.0),
                     recurrence=3, recurrence_window=(0.3, 0.5))
    assert [k.forward_strength != 0 for k in ks] == [True] * 5 + [False] * 5
    assert [k.backward_steps for k in ks] == [0] * 5 + [2] * 5
    assert [k.recurrence for k in ks] == [1, 1, 1, 3, 3, 1, 1, 1, 1, 1]


def test_forward_min_abar_is_a_floor_that_a_step_at_it_passes():
    """"no forward step where a_t is below it" (docs/algorithm.md, forward_min_abar): a step whose a_t equals the floor
    is guided, the noisier ones are not."""
    chain, _ = knobs_of(10)
    _, ks = knobs_of(10, forward_strength=0.1, forward_schedule="constant", forward_min_abar=chain.alpha_bar[2])
    assert [k.forward_strength for k in ks] == [0.0, 0.0] + [0.1] * 8


def test_each_strength_follows_its_own_schedule():
    """s(t) = forward_strength x forward_schedule, the backward step size x backward_schedule, gamma_t = smoothing_std x
    smoothing_schedule (docs/algorithm.md, Knobs); a callable schedule gets (t, a_t)."""
    chain, ks = knobs_of(10, forward_strength=0.5, forward_schedule="constant", backward_steps=1, backward_lr=0.2,
                         backward_schedule=lambda t, a: t / 1000, smoothing_std=0.3, smoothing_schedule=lambda t, a: a)
    assert [k.forward_strength for k in ks] == [0.5] * 10
    assert [k.backward_lr for k in ks] == pytest.approx([0.2 * t / 1000 for t in chain.timesteps], rel=1e-12)
    assert [k.smoothing_std for k in ks] == pytest.approx([0.3 * a for a in chain.alpha_bar], rel=1e-12)


# -- the line search ------------------------------------------------------------------------------------------------


LS = dict(guide_normalize="grad", backward_steps=1, backward_lr=0.5, backward_normalize="grad", backward_backtrack=1,
          backward_merit="point", forward_strength=0.0)


def test_a_trial_that_only_ties_the_loss_is_refused_and_halved():
    """"each backward step is kept for a sample only where the guides' loss falls, else halved" (docs/algorithm.md,
    backward_backtrack; the Scale-free table: "kept where l(x̂0 + δ_new) < l(x̂0 + δ)"). From x = 0.5 toward 0.25 a
    unit-RMS step of 0.5 lands on the mirror point x = 0 with the same loss (and the same l / RMS(grad l)): refused;
    the halved step lands on the target."""
    x0 = torch.full((2, 2, 2, 2), 0.5, dtype=torch.float64)
    delta = testing.one_backward_step(SamplerConfig(**LS), quad(0.25), x0)
    assert torch.equal(x0 + delta, torch.full_like(x0, 0.25))


def test_a_sample_whose_loss_stops_falling_takes_no_further_steps():
    """A sample whose trials all fail "keeps its delta and takes no further steps (they would repeat the same rejected
    trials)" (sampler.backward_line_search): at the guide's minimum one step's 1 + 1 halving trials are scored and
    the search stops, 1 + 2 guide passes in all (not 1 + 2 m for m steps)."""
    x0 = torch.full((1, 2, 2, 2), 0.25)
    run = guidance(guides=quad(0.25), **dict(LS, backward_steps=4))
    knobs = StepKnobs(forward_strength=0.0, backward_steps=4, backward_lr=0.5, recurrence=1, smoothing_std=0.0)
    delta = run.backward_guidance(x0, torch.zeros(1, dtype=torch.long), knobs, Smoothing())
    assert torch.equal(delta, torch.zeros_like(x0))
    assert run.stats.guidance.guide_forward == 3


def test_progress_accepts_a_trade_that_sums_to_exactly_zero():
    """progress: "Σ_i w_i (l_i − l_i,old) / l_i,0 ≤ 0" (docs/algorithm.md, backward_merit), not < 0: guide A (start 1)
    rises by 0.25 while B (start 10) falls by 2.5, a sum of 0 exactly, and a trial that changes nothing, pass."""
    run = guidance(2, guides=[quad(0.9, "a"), quad(0.1, "b")], backward_merit="progress")
    run.own_start = torch.tensor([[1.0], [10.0]])
    assert bool(run._own_losses_allow(torch.tensor([[0.5], [7.5]]), torch.tensor([[0.25], [10.0]])))
    assert bool(run._own_losses_allow(torch.tensor([[0.25], [10.0]]), torch.tensor([[0.25], [10.0]])))
    assert not bool(run._own_losses_allow(torch.tensor([[0.5], [7.75]]), torch.tensor([[0.25], [10.0]])))


def test_relative_merit_weights_each_guides_log_ratio():
    """relative: "Σ_i w_i log(m_i' / m_i) < 0" (docs/algorithm.md, backward_merit_scale): a trial that halves guide
    a's term and quadruples b's falls with weights (3, 1) (−3 ln 2 + 2 ln 2 < 0) and not with (1, 1) or (1, 3)."""
    def falls(weights) -> bool:
        run = guidance(1, guides=[(quad(0.9, "a"), weights[0]), (quad(0.1, "b"), weights[1])], backward_merit_scale="relative")
        one = torch.ones(1)
        new = Scored(one, one, one, None, torch.tensor([[0.5], [4.0]]))
        old = Scored(one, one, one, None, torch.tensor([[1.0], [1.0]]))
        return bool(run._falls(new, old))

    assert falls((3.0, 1.0)) and not falls((1.0, 1.0)) and not falls((1.0, 3.0))


# -- per-guide normalisation, probes, zero-order estimates ------------------------------------------------------------


def test_the_unit_rms_normaliser_is_per_sample():
    """guide_normalize=grad: r_i = RMS(∇_x l_i) "per sample" (docs/algorithm.md, Scale-free guidance), so every
    sample's gradient is unit-RMS however far from the target it is, times the guide's weight."""
    x = torch.stack([torch.full((2, 2, 2), 0.9 + 1e-3), torch.full((2, 2, 2), -5.0), torch.randn(2, 2, 2)])
    _, g = loss_and_grad(as_guide_set([(quad(0.9), 2.0)]), x, make_generators([0, 1, 2]), GuidanceStats(), normalize=True)
    assert torch.allclose(per_sample_rms(g), torch.full((3,), 2.0), rtol=1e-5)
    assert torch.allclose(per_sample_rms(x), per_sample_rms(x.flatten(1)))  # the helper itself: one value a sample


def test_a_zero_order_guides_normalised_gradient_is_unit_rms_too():
    """guide_normalize applies to guides with differentiable = False as to the others: the estimate of the gradient
    is divided by its own RMS per sample, so it is unit-RMS times the weight, and its loss term is l / r."""
    x = torch.randn(2, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    guide = quad(0.9, "zo", differentiable=False)
    loss, g = loss_and_grad(as_guide_set([(guide, 3.0)]), x, make_generators([0, 1]), GuidanceStats(), zo_probes=4, normalize=True)
    assert torch.allclose(per_sample_rms(g), torch.full((2,), 3.0), rtol=1e-5)
    _, raw = loss_and_grad(as_guide_set(guide), x, make_generators([0, 1]), GuidanceStats(), zo_probes=4)  # same probes
    own = (x - 0.9).pow(2).flatten(1).sum(1)
    assert torch.allclose(loss, 3.0 * own / per_sample_rms(raw), rtol=1e-5)


def test_probes_are_fresh_at_every_evaluation_unless_shared():
    """smoothing_shared: "one set of probes per step, shared by forward and backward guidance" (docs/algorithm.md,
    Knobs); without it each evaluation draws its own probes n_j ~ N(0, γ² I)."""
    x = torch.zeros(2, 2, 2, 2)
    gens = make_generators([0, 1])
    guides = as_guide_set(quad(0.9))
    for shared in (False, True):
        smoothing = Smoothing(0.1, 2, "mean", shared=shared)
        first, _ = loss_and_grad(guides, x, gens, GuidanceStats(), smoothing)
        second, _ = loss_and_grad(guides, x, gens, GuidanceStats(), smoothing)
        assert torch.equal(first, second) == shared


def test_each_guides_own_loss_is_the_mean_over_the_probes():
    """own_losses: "each guide's own loss [N] (the probes' mean, before its weight and normaliser)"
    (gradients.loss_and_grad); pareto and progress compare these."""
    x = torch.zeros(2, 2, 2, 2)
    smoothing = Smoothing(0.3, 3, "mean", shared=True)  # shared: the drawn offsets stay readable
    own: list = []
    loss_and_grad(as_guide_set([(quad(0.9), 2.0)]), x, make_generators([0, 1]), GuidanceStats(), smoothing, normalize=True,
                  own_losses=own)
    expected = torch.stack([(x + off - 0.9).pow(2).flatten(1).sum(1) for off in smoothing.offsets]).mean(0)
    assert torch.allclose(own[0], expected, rtol=1e-6) and not torch.allclose(own[0], (x - 0.9).pow(2).flatten(1).sum(1))


def test_a_met_guide_with_weight_zero_never_yields():
    """met: "nor does a guide whose weight ... is not positive" yield (gradients.HeldScales.shares): a guide at
    weight 0 whose loss is far below tau times its start keeps share 1, as one at weight -1 does; at weight 1 the
    same losses give it 1e-3 / 0.01 = 0.1."""
    for weight, share in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.1)):
        held = HeldScales("met", met_below=0.01)
        held.shares([torch.tensor([1.0]), torch.tensor([1.0])], [weight, 1.0])
        first, _ = held.shares([torch.tensor([1e-3]), torch.tensor([1.0])], [weight, 1.0])
        assert torch.allclose(first, torch.tensor([share])), weight


# -- noise ---------------------------------------------------------------------------------------------------------------


def test_each_image_draws_its_own_seeds_noise():
    """"sample i drawn from generator i" (noise.randn): a batch's rows are each seed's own draw; and "any two seeds
    draw different noise" (noise.make_generators), seeds 2^32 apart included, although torch reads 32 bits."""
    rows = randn((3, 2), make_generators([5, 7]), torch.device("cpu"))
    for row, seed in zip(rows, (5, 7)):
        assert torch.equal(row, torch.randn(3, 2, generator=torch.Generator().manual_seed(seed)))
    for a, b in ((0, 2**32), (1, 2**32 + 1), (2**32, 2**33)):
        x, y = randn((8,), make_generators([a, b]), torch.device("cpu"))
        assert not torch.equal(x, y), (a, b)


def test_a_guide_whose_loss_is_not_finite_is_skipped_even_where_its_gradient_is():
    """"A non-finite value anywhere in guidance (a guide's loss or gradient, ...) falls back, for the affected samples
    only, to the value without that guidance term" (docs/algorithm.md, after Schedules): a loss of +inf for sample 0
    with a finite gradient gives sample 0 no gradient, sample 1 its own, and the skip is counted."""
    inf_first = make_guide("inf-first", f=lambda x: x, target=0.9, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1)
                           + torch.tensor([float("inf"), 0.0]))
    x = torch.zeros(2, 2, 2, 2)
    for guides in (inf_first, [inf_first, quad(0.9, "other")]):
        stats = GuidanceStats()
        with pytest.warns(RuntimeWarning, match="non-finite"):
            _, g = loss_and_grad(as_guide_set(guides), x, make_generators([0, 1]), stats)
            stats.finish()
        alone = 0 if guides is inf_first else 1  # the other guide keeps guiding sample 0
        assert torch.equal(g[0], torch.full_like(g[0], -1.8 * alone)) and torch.allclose(g[1], torch.full_like(g[1], -1.8 * (1 + alone)))
        assert stats.nonfinite_skipped == 1


def test_a_backward_line_search_treats_each_sample_as_if_alone():
    """"an image depends only on its own seed" (sampler.sample): a sample's line-searched backward steps
    (backward_compose=add, whose step length is each point's own gain) are the same in a batch as alone, even where
    another sample of the batch needs halvings that it does not."""
    cfg = SamplerConfig(**dict(AUTO, backward_steps=3, backward_lr=0.3, backward_compose="add", backward_backtrack=3,
                               backward_merit="point"))
    g = torch.Generator().manual_seed(5)
    x0 = torch.stack([torch.randn(2, 2, 2, generator=g, dtype=torch.float64) * 2, 0.5 + 0.01 * torch.randn(2, 2, 2, generator=g, dtype=torch.float64)])
    guides = [quad(0.5, "a"), make_guide("b", f=lambda x: x, target=0.45, loss=lambda out, y: (out - y).abs().pow(3).flatten(1).sum(1))]
    both = testing.one_backward_step(cfg, guides, x0)
    for i in range(2):
        assert torch.allclose(both[i], testing.one_backward_step(cfg, guides, x0[i : i + 1])[0], rtol=0, atol=1e-12), i


@pytest.mark.parametrize("shared", [False, True])
def test_shared_probes_are_one_draw_per_step_seen_by_forward_and_backward_guidance(shared):
    """smoothing_shared: "one set of probes per step, shared by forward and backward guidance" (docs/algorithm.md,
    Knobs; TFG): with it the forward and the backward evaluation of a step see the same probe x̂0 + n, without it two;
    either way every step draws afresh, with std γ_t = smoothing_std x schedule. The backward step has lr 0, so the
    x0 the step reports is the x̂0 both evaluations were probed around."""
    seen: list = []
    probe = make_guide("probe", f=lambda x: seen.append(x.detach().clone()) or x, target=0.9,
                       loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1))
    cfg = SamplerConfig(num_steps=4, forward_strength=0.1, forward_on="z_prev", backward_steps=1, backward_lr=0.0,
                        smoothing_std=0.5, smoothing_probes=1, smoothing_shared=shared)
    x0s: list = []
    from ugd_core import sample

    sample(testing.gaussian_backbone(0.5, 0.6, (4, 4, 4), default_scheduler()), probe, cfg, num_images=2, seed=0,
           callback_on_step_end=lambda i, t, d: x0s.append(d["x0"].clone()))
    assert len(seen) == 2 * len(x0s) == 8
    offsets = [(seen[2 * i] - x0, seen[2 * i + 1] - x0) for i, x0 in enumerate(x0s)]
    for fwd, bwd in offsets:
        assert torch.allclose(fwd, bwd, atol=1e-5) == shared
        assert 0.35 < float(fwd.std()) < 0.65
    assert all(not torch.allclose(a[0], b[0], atol=1e-2) for a, b in zip(offsets, offsets[1:]))


def test_pareto_does_not_compare_a_guide_at_weight_zero_at_all():
    """pareto: "one at weight 0 is not compared" (docs/algorithm.md, backward_merit): not even a loss that is not
    finite there (a guide kept only for its record) blocks a trial that lowers the other guide's."""
    run = guidance(1, guides=[(quad(0.9, "a"), 0.0), (quad(0.1, "b"), 1.0)], backward_merit="pareto")
    for bad in (float("inf"), float("nan")):
        assert bool(run._own_losses_allow(torch.tensor([[bad], [0.3]]), torch.tensor([[0.4], [0.4]]))), bad
    assert not bool(run._own_losses_allow(torch.tensor([[bad], [0.5]]), torch.tensor([[0.4], [0.4]])))


def test_a_negative_weight_stays_negative_under_unit_rms_normalisation():
    """guide_normalize=grad: "l = Σ_i w_i l_i / r_i, r_i = RMS(∇_x l_i)" (docs/algorithm.md, Scale-free guidance),
    w_i applied after the normaliser: a weight of -2 gives the loss -2 l / r and the gradient -2 ∇l / r (unit-RMS
    times |w|, pointing up the guide's loss), not w² or |w|."""
    x = torch.zeros(1, 2, 2, 2)
    loss, g = loss_and_grad(as_guide_set([(quad(0.9), -2.0)]), x, make_generators([0]), GuidanceStats(), normalize=True)
    own, raw = 8 * 0.81, torch.full_like(x, -1.8)  # l = Σ (x − 0.9)², ∇l = 2 (x − 0.9)
    assert torch.allclose(loss, torch.tensor([-2.0 * own / 1.8])) and torch.allclose(g, -2.0 * raw / 1.8)


def test_pareto_reads_each_weight_in_the_order_of_the_own_losses():
    """Own losses come differentiable guides first (gradients.loss_order), and pareto signs each by that guide's
    weight (sampler._guide_weights: "in the order of their own losses"): with a zero-order guide at weight -1 listed
    before a differentiable one at weight 1, a trial that lowers the differentiable loss and raises the other passes,
    and the reverse is refused."""
    zo = quad(0.1, "zo", differentiable=False)
    run = guidance(1, guides=[(zo, -1.0), (quad(0.9, "diff"), 1.0)], backward_merit="pareto")
    old = torch.tensor([[0.4], [0.4]])  # [differentiable, zero-order]
    assert bool(run._own_losses_allow(torch.tensor([[0.3], [0.5]]), old))
    assert not bool(run._own_losses_allow(torch.tensor([[0.5], [0.3]]), old))


def test_the_turned_noise_of_a_diffusers_step_lies_on_each_samples_sphere(monkeypatch):
    """forward_on=sphere through a scheduler that takes its noise from the caller: "n is that unit noise, turned on its
    sphere of radius √d (r = √d, σ = 1)", "d = values per sample, norms per sample" (docs/algorithm.md, the step
    table): each image's variance_noise has norm √d, d = 2·4·4 = 32, in a batch of 3."""
    from diffusers import DPMSolverMultistepScheduler

    from ugd_core import sample

    norms: list = []
    step = DPMSolverMultistepScheduler.step

    @functools.wraps(step)  # keeps step's signature, which the sampler probes for variance_noise
    def recording(self, *args, **kwargs):
        if kwargs.get("variance_noise") is not None and len(kwargs["variance_noise"]) == 3:  # not the probe's own steps
            norms.append(kwargs["variance_noise"].flatten(1).norm(dim=1))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(DPMSolverMultistepScheduler, "step", recording)
    cfg = SamplerConfig(**dict(AUTO, num_steps=4, scheduler="dpm++-sde"))
    sample(testing.gaussian_backbone(0.2, 0.5, (2, 4, 4), default_scheduler()), quad(0.9), cfg, num_images=3, seed=4)
    assert len(norms) >= 4
    for n in norms:
        assert torch.allclose(n, torch.full((3,), 32**0.5), rtol=1e-4)
