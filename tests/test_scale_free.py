"""Scale-free guidance (docs/algorithm.md, "Scale-free guidance"): per-guide unit-RMS gradients, unit-RMS
forward and backward steps, and backward steps line-searched so that the guides' loss never rises.

The claims: multiplying a guide's loss by any c > 0 leaves the default preset's samples unchanged (to 1e-4),
a guide's ``weight`` is its share of the step whatever its loss's units, and a backtracked backward step
never increases the loss, however large the step size."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core import testing
from ugd_core.backbones import default_scheduler
from ugd_core.errors import UgdError
from ugd_core.gradients import GuidanceStats, loss_and_grad, per_sample_rms
from ugd_core.guidance import as_guide_set, guide_loss
from ugd_core.presets import PRESETS

AUTO = PRESETS["auto"][1]


def quad(target: float, scale: float = 1.0, name: str = "quad"):
    return make_guide(name, f=lambda x: x, loss=lambda out, y: scale * (out - y).pow(2).flatten(1).sum(1), target=target)


def cubic(scale: float = 1.0):
    """A non-quadratic loss whose gradient direction differs from quad's."""
    return make_guide("cubic", f=lambda x: x, loss=lambda out, y: scale * (out - y).abs().pow(3).flatten(1).sum(1), target=0.7)


def backbone():
    return testing.gaussian_backbone(0.5, 0.6, (8, 2, 2), default_scheduler())


def run(guides, n=4, **knobs):
    cfg = SamplerConfig(**dict(AUTO, num_steps=10, **knobs))
    return sample(backbone(), guides, cfg, num_images=n, seed=3).images


def grads(guides, normalize: bool):
    x = torch.randn(3, 8, 2, 2, generator=torch.Generator().manual_seed(1))
    return loss_and_grad(as_guide_set(guides), x, [torch.Generator()] * 3, GuidanceStats(), normalize=normalize)


@pytest.mark.parametrize("c", [1e-3, 1e-1, 10.0, 1e3])
def test_a_guides_loss_scale_leaves_the_normalised_gradient_and_loss_unchanged(c):
    loss1, g1 = grads([quad(-1.0)], normalize=True)
    loss_c, g_c = grads([quad(-1.0, scale=c)], normalize=True)
    assert torch.allclose(g_c, g1, rtol=1e-5, atol=1e-7) and torch.allclose(loss_c, loss1, rtol=1e-5)
    assert torch.allclose(per_sample_rms(g1), torch.ones(3), atol=1e-5)  # unit RMS per sample
    _, raw = grads([quad(-1.0, scale=c)], normalize=False)
    assert not torch.allclose(raw, g1, rtol=1e-2)  # without the knob the scale is in the gradient


def test_weights_are_shares_of_the_step_whatever_the_losses_units():
    """--guide a --guide b:weight=2 gives unit(g_a) + 2 unit(g_b), whichever raw loss is larger."""
    one = [quad(-1.0, scale=1e3), (cubic(scale=1e-3), 2.0)]
    other = [quad(-1.0, scale=1e-3), (cubic(scale=1e3), 2.0)]
    _, g_one = grads(one, normalize=True)
    _, g_other = grads(other, normalize=True)
    _, g_a = grads([quad(-1.0)], normalize=True)
    _, g_b = grads([cubic()], normalize=True)
    assert torch.allclose(g_one, g_other, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g_one, g_a + 2 * g_b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_the_default_presets_samples_do_not_depend_on_the_loss_scale(c):
    """The line search refuses trials in this chain: without it (backward_backtrack=0) the images move by 0.077. In
    float64 the default's samples are the same to rounding (2e-16 measured). In float32 the last step's twelve halvings
    (pilot round 37) try steps down to 7e-6, where the compared losses' rounding can flip one decision (1.3e-4 and 2.6e-4
    measured on this chain at c = 1e3 and 1e-3, docs/algorithm.md): float32 is checked with the last step's halvings
    at the rest of the chain's one."""
    z = torch.randn(4, 8, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    cfg = SamplerConfig(**dict(AUTO, num_steps=10))
    exact = [sample(backbone(), g, cfg, num_images=4, seed=3, latents=z).images
             for g in ([quad(-1.0), cubic()], [quad(-1.0, scale=c), cubic(scale=1 / c)])]
    assert exact[0].dtype == torch.float64 and (exact[0] - exact[1]).abs().max() <= 1e-12
    ref = run([quad(-1.0), cubic()], backward_final_backtrack=0)
    scaled = run([quad(-1.0, scale=c), cubic(scale=1 / c)], backward_final_backtrack=0)
    assert (scaled - ref).abs().max() <= 1e-4
    ref = run([quad(-1.0), cubic()])
    assert (run([quad(-1.0)]) - ref).abs().max() > 1e-2  # the second guide does matter
    assert (run([quad(-1.0), cubic()], backward_backtrack=0) - ref).abs().max() > 1e-2  # and so does the line search


def test_without_the_knobs_the_loss_scale_changes_the_samples():
    knobs = dict(guide_normalize="none", forward_normalize="none", backward_normalize="none", backward_backtrack=0)
    assert (run([quad(-1.0, scale=1e-3)], **knobs) - run([quad(-1.0)], **knobs)).abs().max() > 1e-2


def test_a_backtracked_backward_step_never_raises_the_loss_however_large_the_step():
    """lr = 100 overshoots the quadratic's minimum by far; halving finds a step that lowers the loss, and a
    plain SGD step of the same size raises it."""
    from ugd_core.sampler import StepKnobs, UniversalGuidance
    from ugd_core.gradients import Smoothing

    guide = as_guide_set([quad(-1.0)])
    x0 = torch.randn(4, 8, 2, 2, generator=torch.Generator().manual_seed(0))
    before = guide.items[0].guide.loss(x0, -1.0)
    knobs = StepKnobs(forward_strength=0.0, backward_steps=1, backward_lr=100.0, recurrence=1, smoothing_std=0.0)
    t = torch.zeros(4, dtype=torch.long)
    for backtrack, rises in ((6, False), (0, True)):
        cfg = SamplerConfig(backward_steps=2, backward_normalize="grad", backward_backtrack=backtrack)
        run_ = UniversalGuidance(backbone(), guide, cfg, [torch.Generator()] * 4)
        delta = run_.backward_guidance(x0, t, knobs, Smoothing())
        after = guide.items[0].guide.loss(x0 + delta, -1.0)
        assert bool((after > before).all()) == rises
        if not rises:
            assert bool((after < before).all())


def test_backtracking_needs_plain_gradient_steps():
    with pytest.raises(UgdError, match="backward_optimizer=sgd"):
        SamplerConfig(backward_steps=1, backward_optimizer="adam", backward_backtrack=2)


def test_no_divergence_with_a_loss_that_explodes():
    """A loss in huge units (1e30) overflows raw-gradient presets; the default's steps stay unit-RMS."""
    out = sample(backbone(), [quad(-1.0, scale=1e30)], SamplerConfig(**dict(AUTO, num_steps=10)), num_images=4, seed=0)
    assert torch.isfinite(out.images).all() and out.stats.guidance.nonfinite_skipped == 0


def test_the_digits_backbone_defaults_to_auto_at_its_own_step_count():
    from cli.run import RunSpec
    from cli.spec import resolve_config
    from ugd_core.registry import get_registry

    reg = get_registry()
    cfg, name = resolve_config(RunSpec(guides=["digit:label=1"]), reg)
    assert name == "auto" and cfg.num_steps == reg.get("backbone", "digits").default_steps == 20
    assert cfg.guide_normalize == "grad" and cfg.backward_backtrack == 1 and cfg.backward_merit == "pareto"  # round 28: one halving
    assert cfg.backward_final_steps == 10 and cfg.backward_merit_scale == "absolute"  # rounds 22 and 21
    assert cfg.backward_final_backtrack == 12 and PRESETS["auto-eps"][1]["backward_final_backtrack"] == 0  # round 37
    assert PRESETS["auto-eps"][1]["backward_merit"] == "point"  # piloted at DDIM only; round 19's look sent it back
    assert PRESETS["auto-eps"][1]["backward_final_steps"] == 0  # piloted at DDIM only (round 22)
    assert PRESETS["auto-eps"][1]["backward_backtrack"] == 3  # piloted at DDIM only (round 28)
    cfg, _ = resolve_config(RunSpec(guides=["digit:label=1"], preset="dps"), reg)
    assert cfg.num_steps == 20 and cfg.forward_on == "z_prev"  # any preset takes the backbone's step count
    cfg, _ = resolve_config(RunSpec(guides=["digit:label=1"], overrides=dict(num_steps=7)), reg)
    assert cfg.num_steps == 7


FAR, NEAR = torch.full((2, 8, 2, 2), -0.5), torch.full((2, 8, 2, 2), 0.85)  # quad(0.9)'s gradient RMS there: 2.8, 0.1


def normalised(x, held=None):
    """(loss, gradient) of quad(0.9) at x with unit-RMS normalisation, held normalisers if given."""
    return loss_and_grad(as_guide_set(quad(0.9)), x, [torch.Generator()] * len(x), GuidanceStats(), normalize=True, held=held)


def test_first_step_normalisers_are_scale_free_and_let_a_met_guide_fade():
    """guide_normalize=first: r_i from each guide's first evaluation, held for the run. A loss in other units
    gives the same images (which differ from grad's by 0.071); and a guide's gradient share falls as its loss is met
    (r_i no longer follows it)."""
    from ugd_core.gradients import HeldScales

    a = run([quad(0.9), (cubic(), 1.0)], guide_normalize="first")
    b = run([quad(0.9, scale=1e3), (cubic(scale=1e-3), 1.0)], guide_normalize="first")
    assert (a - b).abs().max() <= 1e-4 and (a - run([quad(0.9), (cubic(), 1.0)])).abs().max() > 1e-3
    held = HeldScales()
    g_far, g_near = normalised(FAR, held)[1], normalised(NEAR, held)[1]
    assert per_sample_rms(g_far).allclose(torch.ones(2)) and (per_sample_rms(g_near) < 0.05).all()


def test_peak_normalisers_fade_a_met_guide_while_its_loss_keeps_its_own():
    """guide_normalize=peak: each guide's gradient divided by the largest RMS it has had in the run, its loss
    by the RMS at the point evaluated. Scale-free; a single guide's sample equals `grad`'s (only the direction
    of the step counts there); in a composition a guide whose gradient has shrunk takes a shrinking share (the images
    differ from grad's by 0.13)."""
    from ugd_core.gradients import HeldScales

    a = run([quad(0.9), (cubic(), 1.0)], guide_normalize="peak")
    b = run([quad(0.9, scale=1e3), (cubic(scale=1e-3), 1.0)], guide_normalize="peak")
    assert (a - b).abs().max() <= 1e-4 and (a - run([quad(0.9), (cubic(), 1.0)], guide_normalize="grad")).abs().max() > 1e-3
    assert (run([quad(0.9)], guide_normalize="peak") - run([quad(0.9)], guide_normalize="grad")).abs().max() <= 1e-4
    held = HeldScales("peak")
    _, g_far = normalised(FAR, held)
    l_near, g_near = normalised(NEAR, held)
    assert per_sample_rms(g_far).allclose(torch.ones(2)) and (per_sample_rms(g_near) < 0.05).all()  # 0.1 / 2.8
    assert l_near.allclose(normalised(NEAR)[0])  # the loss is divided by its own RMS, as with grad
    # the peak only rises: a steeper point raises it, and the near point is then divided by that one
    normalised(torch.full((2, 8, 2, 2), -3.0), held)
    g_after = normalised(NEAR, held)[1]
    assert torch.allclose(per_sample_rms(g_after), per_sample_rms(g_near) * 2.8 / 7.8, rtol=1e-4)


def test_a_share_floor_keeps_a_met_guides_share():
    """guide_share_floor=f: with peak normalisers a guide's share r_i / max r_i never falls below f (f = 1: grad)."""
    from ugd_core.gradients import HeldScales

    for floor, share in ((0.0, 0.05 / 1.4), (0.3, 0.3), (1.0, 1.0)):
        held = HeldScales("peak", floor)
        normalised(FAR, held)
        g = normalised(NEAR, held)[1]
        assert torch.allclose(per_sample_rms(g), torch.full((2,), share), rtol=1e-4)
    with pytest.raises(UgdError, match="guide_share_floor"):
        SamplerConfig(guide_normalize="peak", guide_share_floor=1.5)
    with pytest.raises(UgdError, match="needs guide_normalize=peak"):
        SamplerConfig(guide_normalize="grad", guide_share_floor=0.3)


def linear(direction: torch.Tensor, name: str):
    """l(x) = <x, direction> per sample: its gradient is ``direction`` everywhere."""
    return make_guide(name, f=lambda x: x, loss=lambda out, y: (out * direction).flatten(1).sum(1), target=0.0)


@pytest.mark.parametrize("weights, gain", [((1.0, 1.0), 2**0.5), ((1.0, 2.0), 5**0.5 / 2)])
def test_added_backward_steps_are_as_long_as_each_guides_own(weights, gain):
    """backward_compose=add: the first backward step of two guides with orthogonal gradients is lr times
    RMS(sum_i w_i u_i) / max w_i (sqrt(2) for equal weights, sqrt(5) / 2 for weights 1 and 2), whatever
    their raw sizes, where the default (share) keeps it at lr; parallel guides add to 2 lr."""
    from ugd_core.gradients import Smoothing
    from ugd_core.sampler import StepKnobs, UniversalGuidance

    a, b = torch.zeros(8, 2, 2), torch.zeros(8, 2, 2)
    a[:4], b[4:] = 3.0, 0.01  # orthogonal, RMS 2.1 and 0.007

    def first_step(guides, compose):
        cfg = SamplerConfig(**dict(AUTO, backward_steps=1, backward_backtrack=0, backward_compose=compose))
        run_ = UniversalGuidance(backbone(), as_guide_set(guides), cfg, [torch.Generator()] * 2)
        knobs = StepKnobs(forward_strength=0.0, backward_steps=1, backward_lr=0.1, recurrence=1, smoothing_std=0.0)
        return per_sample_rms(run_.backward_guidance(torch.zeros(2, 8, 2, 2), torch.zeros(2, dtype=torch.long), knobs, Smoothing()))

    pair = [(linear(a, "a"), weights[0]), (linear(b, "b"), weights[1])]
    assert torch.allclose(first_step(pair, "share"), torch.full((2,), 0.1), rtol=1e-5)
    assert torch.allclose(first_step(pair, "add"), torch.full((2,), 0.1 * gain), rtol=1e-5)
    assert torch.allclose(first_step([linear(a, "a"), linear(2 * a, "a2")], "add"), torch.full((2,), 0.2), rtol=1e-5)
    assert torch.allclose(first_step([(linear(a, "a"), 2.0)], "add"), torch.full((2,), 0.1), rtol=1e-5)  # one guide: lr


def test_added_backward_steps_are_scale_free_and_one_guide_is_unchanged():
    """With backward_compose=add the default's samples do not depend on either loss's units (1e-4), they differ
    from the shared step's in a composition (by 0.36; 0.0099 in the float64 chain with auto's final steps and their
    halvings, 0.027 before round 37 gave the last step twelve), and a single guide's sample is bit for bit the shared one's."""
    # m = 3 at every step, as written: with auto's ten steps at the last step one float32 decision there flips
    # (1.2e-4), so that case is checked in float64 (1e-16 measured)
    a = run([quad(0.9), cubic()], backward_compose="add", backward_final_steps=0)
    b = run([quad(0.9, scale=1e3), cubic(scale=1e-3)], backward_compose="add", backward_final_steps=0)
    assert (a - b).abs().max() <= 1e-4 and (a - run([quad(0.9), cubic()], backward_final_steps=0)).abs().max() > 1e-3
    z = torch.randn(4, 8, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    cfg = SamplerConfig(**dict(AUTO, num_steps=10, backward_compose="add"))
    a, b = (sample(backbone(), g, cfg, num_images=4, seed=3, latents=z).images
            for g in ([quad(0.9), cubic()], [quad(0.9, scale=1e3), cubic(scale=1e-3)]))
    assert a.dtype == torch.float64 and (a - b).abs().max() <= 1e-10
    share = sample(backbone(), [quad(0.9), cubic()], cfg.updated(backward_compose="share"), num_images=4, seed=3, latents=z).images
    assert (a - share).abs().max() > 1e-3
    assert torch.equal(run([cubic()], backward_compose="add"), run([cubic()]))
    with pytest.raises(UgdError, match="backward_compose=add .* needs guide_normalize"):
        SamplerConfig(**dict(AUTO, guide_normalize="none", backward_compose="add"))


def test_line_search_merits_a_step_that_raises_the_raw_loss():
    """l = sum |x|^3 + 0.01 per pixel, at x = 0.1 with a step of 0.3: the trial x = -0.2 raises l (0.011 -> 0.018
    a pixel) but lowers l / RMS(grad l) (0.011 / 0.03 -> 0.018 / 0.12), so the default merit (each r at the point
    it scores) keeps it; backward_merit=start holds r at the start, rejects it and keeps the halved step (x =
    -0.05, l = 0.010125 a pixel); pareto needs both, and each of the halved trials (-0.05, 0.025, 0.0625) raises
    l / RMS(grad l) (1.35, 5.3, 0.87 against 0.37): it keeps x."""
    from ugd_core.gradients import Smoothing
    from ugd_core.sampler import StepKnobs, UniversalGuidance

    guide = make_guide("flat-bottom", f=lambda x: x, loss=lambda out, y: (out.abs().pow(3) + 0.01).flatten(1).sum(1), target=0.0)
    x0 = torch.full((2, 8, 2, 2), 0.1)
    knobs = StepKnobs(forward_strength=0.0, backward_steps=1, backward_lr=0.3, recurrence=1, smoothing_std=0.0)
    after = {}
    for merit in ("point", "start", "pareto"):
        cfg = SamplerConfig(**dict(AUTO, backward_steps=1, backward_merit=merit))
        run_ = UniversalGuidance(backbone(), as_guide_set(guide), cfg, [torch.Generator()] * 2)
        delta = run_.backward_guidance(x0, torch.zeros(2, dtype=torch.long), knobs, Smoothing())
        after[merit] = (x0 + delta)[:, 0, 0, 0]
    assert torch.allclose(after["point"], torch.full((2,), -0.2)) and torch.allclose(after["start"], torch.full((2,), -0.05))
    assert torch.equal(after["pareto"], torch.full((2,), 0.1))
    with pytest.raises(UgdError, match="backward_merit=start"):
        SamplerConfig(**dict(AUTO, guide_normalize="peak", backward_merit="start"))


@pytest.mark.parametrize("merit", ["start", "pareto", "progress"])
def test_line_search_merits_are_scale_free(merit):
    """backward_merit=start compares sum_i w_i l_i / r_i(start), pareto also each guide's own loss with itself,
    progress the own losses' changes in units of each guide's first loss: a loss in other units leaves the
    samples (1e-4). Each merit moves them from point's (start 0.10, pareto 0.031, progress 0.023; progress also
    from pareto's, 0.013: the first losses l_i0 decide trials)."""
    a = run([quad(0.9), cubic()], backward_merit=merit)
    b = run([quad(0.9, scale=1e3), cubic(scale=1e-3)], backward_merit=merit)
    assert (a - b).abs().max() <= 1e-4 and torch.isfinite(a).all()
    assert (a - run([quad(0.9), cubic()], backward_merit="point")).abs().max() > 1e-2
    if merit == "progress":
        assert (a - run([quad(0.9), cubic()])).abs().max() > 5e-3


def test_loss_and_grad_reports_each_guides_own_loss():
    """own_losses: each guide's loss before its weight and normaliser, in the guides' order."""
    x = torch.full((2, 8, 2, 2), 0.5)
    own: list = []
    loss_and_grad(as_guide_set([(quad(0.9), 3.0), (cubic(), 2.0)]), x, [torch.Generator()] * 2, GuidanceStats(), normalize=True,
                  own_losses=own)
    assert torch.allclose(own[0], torch.full((2,), 32 * 0.4**2)) and torch.allclose(own[1], torch.full((2,), 32 * 0.2**3))


def own_losses_allow(new, old, start, weights=(1.0, 1.0), **knobs) -> bool:
    """The line search's test of a trial's own losses ``new`` against ``old`` (two guides, one sample), each guide's
    first loss in the run ``start``, with ``auto``'s knobs changed by ``knobs``."""
    from ugd_core.sampler import UniversalGuidance

    cfg = SamplerConfig(**dict(AUTO, **knobs))
    run_ = UniversalGuidance(backbone(), as_guide_set([(quad(0.9), weights[0]), (cubic(), weights[1])]), cfg, [torch.Generator()])
    run_.own_start = torch.tensor(start).view(2, 1)
    return bool(run_._own_losses_allow(torch.tensor(new).view(2, 1), torch.tensor(old).view(2, 1)))


def test_progress_merit_lets_a_met_guide_rise_by_less_than_another_falls_in_units_of_their_starts():
    """backward_merit=progress accepts a trial's own losses l_i against the current l_i_old when
    sum_i w_i (l_i - l_i_old) / l_i0 <= 0, l_i0 each guide's first loss in the run; pareto needs every l_i <= l_i_old.
    Guide A started at 1 and rises by 0.05, guide B started at 10 and falls by 1: progress keeps the trial
    (0.05 - 0.1 < 0), pareto refuses it; a rise of 0.2 is refused by both; B's loss in other units changes nothing;
    weight 3 on A turns the first trial (0.15 - 0.1 > 0)."""

    def allows(merit, new, old, start, weights=(1.0, 1.0)):
        return own_losses_allow(new, old, start, weights, backward_merit=merit)

    assert allows("progress", [0.15, 8.0], [0.10, 9.0], [1.0, 10.0]) and not allows("pareto", [0.15, 8.0], [0.10, 9.0], [1.0, 10.0])
    assert not allows("progress", [0.30, 8.0], [0.10, 9.0], [1.0, 10.0])
    assert allows("progress", [0.15, 8e3], [0.10, 9e3], [1.0, 1e4])
    assert not allows("progress", [0.15, 8e3], [0.10, 9e3], [1.0, 1e4], weights=(3.0, 1.0))  # only l_i0's units refuse it
    assert not allows("progress", [0.15, 8.0], [0.10, 9.0], [1.0, 10.0], weights=(3.0, 1.0))


def test_progress_merit_is_pareto_for_one_guide_and_keeps_the_first_losses_as_the_start():
    """One guide: the sign of l - l_old decides both, so the samples are bit for bit pareto's; the start l_i0 is
    the guides' own losses at the run's first evaluation."""
    from ugd_core.gradients import Smoothing
    from ugd_core.sampler import StepKnobs, UniversalGuidance

    assert torch.equal(run([cubic()], backward_merit="progress"), run([cubic()], backward_merit="pareto"))
    cfg = SamplerConfig(**dict(AUTO, backward_merit="progress"))
    run_ = UniversalGuidance(backbone(), as_guide_set([quad(0.9), cubic()]), cfg, [torch.Generator()] * 2)
    x0 = torch.full((2, 8, 2, 2), 0.5)
    knobs = StepKnobs(forward_strength=0.0, backward_steps=2, backward_lr=0.1, recurrence=1, smoothing_std=0.0)
    run_.backward_guidance(x0, torch.zeros(2, dtype=torch.long), knobs, Smoothing())
    assert torch.allclose(run_.own_start, torch.tensor([[32 * 0.4**2] * 2, [32 * 0.2**3] * 2]))


def test_pareto_slack_lets_each_guide_rise_by_at_most_its_share_of_its_start():
    """backward_merit_slack s: pareto accepts l_i <= l_i_old + s l_i0 for every guide (l_i0 its first loss in the
    run), s = 0 exactly pareto's l_i <= l_i_old. A saturated guide (start 8, now 1e-7) may rise by 5e-5 with
    s = 1e-5 (at most 8e-5) but not by 1e-3; the other guide may not rise at all beyond its own 1e-5 x 0.7; the
    same in other units; any other merit with a slack is a one-line error."""

    def allows(slack, new, old, start=(8.0, 0.7)):
        return own_losses_allow(new, old, start, backward_merit_slack=slack)

    assert allows(1e-5, [1e-7 + 5e-5, 0.3], [1e-7, 0.4]) and not allows(0.0, [1e-7 + 5e-5, 0.3], [1e-7, 0.4])
    assert not allows(1e-5, [1e-7 + 1e-3, 0.3], [1e-7, 0.4])
    assert allows(1e-5, [1e-7, 0.4 + 5e-6], [1e-7, 0.4]) and not allows(1e-5, [1e-7, 0.4 + 1e-5], [1e-7, 0.4])
    assert allows(1e-5, [1e-4 + 5e-2, 300.0], [1e-4, 400.0], start=(8e3, 700.0))
    with pytest.raises(UgdError, match="backward_merit_slack=0.001 loosens backward_merit=pareto"):
        SamplerConfig(**dict(AUTO, backward_merit="point", backward_merit_slack=1e-3))
    with pytest.raises(UgdError, match="backward_merit_slack must be >= 0"):
        SamplerConfig(**dict(AUTO, backward_merit_slack=-1.0))


def test_pareto_pushes_a_guide_with_a_negative_weight_up_and_leaves_one_with_weight_0_free():
    """A negative weight asks for a guide's loss to rise ("anything but"): pareto refuses a trial that lowers it
    (it refused every trial that raised it before, so such a guide's backward steps were all silently refused); a
    guide at weight 0 is not compared at all."""
    assert own_losses_allow([0.5, 0.3], [0.4, 0.4], (1.0, 1.0), weights=(-1.0, 1.0))
    assert not own_losses_allow([0.3, 0.3], [0.4, 0.4], (1.0, 1.0), weights=(-1.0, 1.0))
    assert own_losses_allow([9.0, 0.3], [0.4, 0.4], (1.0, 1.0), weights=(0.0, 1.0))
    assert not own_losses_allow([0.5, 0.3], [0.4, 0.4], (1.0, 1.0))  # weights (1, 1): no rise


def test_a_negative_weight_takes_backward_steps():
    """One guide at weight -1 with auto: its backward steps are taken (the images differ from the same run without
    backward steps) and push its loss up further than the forward step alone."""
    guide = quad(0.9)
    with_bw, without = run([(guide, -1.0)]), run([(guide, -1.0)], backward_steps=0, backward_final_steps=0)
    assert not torch.equal(with_bw, without)
    assert guide_loss(guide, with_bw).mean() > guide_loss(guide, without).mean()


def test_met_lets_a_yielding_guide_rise_up_to_tau_times_its_start():
    """guide_normalize=met with pareto: guide A (start 1, now 1e-4 < tau = 0.01: yielding) may rise up to 0.01 but
    not beyond; guide B (start 1, at 0.4: not met) may not rise; with grad neither may rise."""
    from ugd_core.gradients import HeldScales
    from ugd_core.sampler import UniversalGuidance

    def allows(new, old, mode="met"):
        cfg = SamplerConfig(**dict(AUTO, guide_normalize=mode))
        run_ = UniversalGuidance(backbone(), as_guide_set([quad(0.9), cubic()]), cfg, [torch.Generator()])
        if run_.held is not None:
            run_.held.starts = [torch.ones(1), torch.ones(1)]
        return bool(run_._own_losses_allow(torch.tensor(new).view(2, 1), torch.tensor(old).view(2, 1)))

    assert allows([9e-3, 0.3], [1e-4, 0.4]) and not allows([2e-2, 0.3], [1e-4, 0.4])
    assert not allows([1e-4, 0.41], [1e-4, 0.4])
    assert not allows([9e-3, 0.3], [1e-4, 0.4], mode="grad")
    assert isinstance(UniversalGuidance(backbone(), as_guide_set([quad(0.9)]), SamplerConfig(guide_normalize="met"),
                                        [torch.Generator()]).held, HeldScales)


def test_pareto_slack_zero_is_pareto_bit_for_bit_and_a_slack_is_scale_free():
    """The default slack 0 leaves auto's samples as they were (no start is kept); with a slack the start l_i0 is
    the run's first own losses, so a loss in other units leaves the samples (1e-4), and a slack moves them. The slack
    1e-3 binds both ways: it lets trials through (0.028 from pareto's) and refuses some (0.027 from point's, which any
    slack >= 1e-2 gives bit for bit in this chain)."""
    assert torch.equal(run([quad(0.9), cubic()], backward_merit_slack=0.0), run([quad(0.9), cubic()]))
    a = run([quad(0.9), cubic()], backward_merit_slack=1e-3)
    b = run([quad(0.9, scale=1e3), cubic(scale=1e-3)], backward_merit_slack=1e-3)
    assert (a - b).abs().max() <= 1e-4 and torch.isfinite(a).all()
    assert (a - run([quad(0.9), cubic()])).abs().max() > 1e-2
    assert (a - run([quad(0.9), cubic()], backward_merit="point")).abs().max() > 1e-2


def test_relative_merit_lets_no_large_term_outvote_a_small_terms_gain():
    """backward_merit_scale=relative: a trial falls when sum_i w_i log(m_i' / m_i) < 0 over the guides' terms
    m_i = w_i l_i / r_i; absolute when sum_i m_i' < sum_i m_i. A saturated term 50 -> 51.5 (+3%) beside a term
    0.03 -> 0.015 (halved): absolute refuses (51.515 > 50.03), relative takes it (log 1.03 + log 0.5 < 0); 50 -> 110
    (x2.2) outweighs the halving; a weight of 2 on the small term doubles its say; one guide is the same test."""
    from ugd_core.sampler import Scored, UniversalGuidance

    def falls(scale, new, old, weights=(1.0, 1.0)):
        cfg = SamplerConfig(**dict(AUTO, backward_merit_scale=scale))
        guides = as_guide_set([(quad(0.9), weights[0]), (cubic(), weights[1])][: len(new)])
        run_ = UniversalGuidance(backbone(), guides, cfg, [torch.Generator()])
        at = lambda m: Scored(torch.tensor([sum(m)]), torch.zeros(1), torch.ones(1), None, torch.tensor(m).view(-1, 1))
        return bool(run_._falls(at(new), at(old)))

    assert falls("relative", [51.5, 0.015], [50.0, 0.03]) and not falls("absolute", [51.5, 0.015], [50.0, 0.03])
    assert not falls("relative", [110.0, 0.015], [50.0, 0.03])
    assert not falls("relative", [55.0, 0.028], [50.0, 0.03]) and falls("relative", [55.0, 0.0227], [50.0, 0.03], weights=(1.0, 2.0))
    for new in ([49.0], [51.0]):
        assert falls("relative", new, [50.0]) == falls("absolute", new, [50.0])


def test_relative_merit_is_absolute_for_one_guide_and_scale_free_for_several():
    """With quad(-1.0) the relative test decides trials (0.13 from absolute's; with quad(0.9) it never does here). In
    float32, with the last step's halvings at the chain's one (see the default's loss-scale test)."""
    assert torch.equal(run([cubic()], backward_merit_scale="relative"), run([cubic()]))
    a = run([quad(-1.0), cubic()], backward_merit_scale="relative", backward_final_backtrack=0)
    b = run([quad(-1.0, scale=1e3), cubic(scale=1e-3)], backward_merit_scale="relative", backward_final_backtrack=0)
    assert (a - b).abs().max() <= 1e-4 and torch.isfinite(a).all()
    assert (a - run([quad(-1.0), cubic()], backward_final_backtrack=0)).abs().max() > 1e-2
    with pytest.raises(UgdError, match="backward_merit_scale=relative .* smoothing_reduce=log_mean_exp"):
        SamplerConfig(**dict(AUTO, backward_merit_scale="relative", smoothing_reduce="log_mean_exp"))


def test_loss_and_grad_reports_each_guides_term_of_the_loss():
    """terms: each guide's w_i l_i / r_i as summed into the loss, in the guides' order."""
    x = torch.randn(2, 8, 2, 2, generator=torch.Generator().manual_seed(4))
    terms: list = []
    loss, _ = loss_and_grad(as_guide_set([(quad(0.9), 3.0), (cubic(), 2.0)]), x, [torch.Generator()] * 2, GuidanceStats(),
                            normalize=True, terms=terms)
    own = [32 * ((x - 0.9) ** 2).flatten(1).mean(1), 32 * ((x - 0.7).abs() ** 3).flatten(1).mean(1)]
    rms = [per_sample_rms(2 * (x - 0.9)), per_sample_rms(3 * (x - 0.7).abs() * (x - 0.7))]
    assert len(terms) == 2 and torch.allclose(terms[0], 3.0 * own[0] / rms[0]) and torch.allclose(terms[1], 2.0 * own[1] / rms[1])
    assert torch.allclose(terms[0] + terms[1], loss)


def test_backward_final_steps_set_m_at_the_last_step_only():
    """backward_final_steps: m at the chain's last step (0: backward_steps there too), only where the backward
    window covers that step; negative counts are one line."""
    from ugd_core.sampler import NoiseSchedule, UniversalGuidance

    chain = NoiseSchedule.from_scheduler(default_scheduler(), 5)

    def steps(**knobs):
        cfg = SamplerConfig(**dict(AUTO, num_steps=5, **knobs))
        return [k.backward_steps for k in UniversalGuidance(backbone(), as_guide_set(quad(0.9)), cfg, []).step_knobs(chain)]

    assert steps(backward_final_steps=0) == [3] * 5 and steps(backward_final_steps=10) == [3, 3, 3, 3, 10] == steps()  # auto's
    assert steps(backward_final_steps=10, backward_window=(0.0, 0.5)) == [3, 3, 3, 0, 0]
    with pytest.raises(UgdError, match="backward_final_steps must be >= 0"):
        SamplerConfig(**dict(AUTO, backward_final_steps=-1))


def test_backward_final_backtrack_sets_the_halvings_at_the_last_step_only():
    """backward_final_backtrack: the line search's halvings at the chain's last step (0: backward_backtrack there too);
    it acts only where the line search is on; negative counts are one line."""
    from ugd_core.sampler import NoiseSchedule, UniversalGuidance

    chain = NoiseSchedule.from_scheduler(default_scheduler(), 5)

    def halvings(**knobs):
        cfg = SamplerConfig(**dict(AUTO, num_steps=5, **knobs))
        return [k.backward_backtrack for k in UniversalGuidance(backbone(), as_guide_set(quad(0.9)), cfg, []).step_knobs(chain)]

    assert halvings(backward_final_backtrack=0) == [1] * 5 and halvings(backward_final_backtrack=6) == [1, 1, 1, 1, 6]
    with pytest.raises(UgdError, match="backward_final_backtrack must be >= 0"):
        SamplerConfig(**dict(AUTO, backward_final_backtrack=-1))
    plain = dict(backward_backtrack=0, backward_steps=1, backward_final_steps=0)  # no line search: plain steps, no halvings
    assert torch.equal(run([quad(0.9)], **plain, backward_final_backtrack=6), run([quad(0.9)], **plain, backward_final_backtrack=0))


def test_more_halvings_at_the_last_step_meet_a_squared_error_the_fixed_step_overshoots():
    """A unit-RMS step of fixed length lands about its own length from a squared error's zero; at the last step, whose
    x0_hat + delta is the image, halvings shorten the trials until the loss stops falling, so the image meets the
    target far closer."""
    target = 0.9
    guide = quad(target)
    # enough steps at the last step (x0_hat starts an RMS of about 0.3 off there) that the residual, not the count, limits it
    base, more = (run([guide], backward_final_steps=30, backward_final_backtrack=n) for n in (0, 12))
    err = lambda x: ((x - target) ** 2).flatten(1).mean(1)  # noqa: E731  (the guide's own loss, up to its factor)
    assert (err(more) < 1e-3 * err(base)).all() and err(base).min() > 0


def test_own_losses_and_terms_come_in_loss_order_whatever_the_guides_order():
    """A zero-order guide listed first is reported after the differentiable ones (loss_order), so the line
    search weighs each own loss and term with its own guide's weight."""
    from ugd_core.gradients import loss_order

    hard = make_guide("hard", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=0.2, differentiable=False)
    guides = as_guide_set([(hard, 5.0), (quad(0.9), 3.0), (cubic(), 2.0)])
    assert [(i.guide.name, i.weight) for i in loss_order(guides)] == [("quad", 3.0), ("cubic", 2.0), ("hard", 5.0)]
    x = torch.full((2, 8, 2, 2), 0.5)
    own: list = []
    loss_and_grad(guides, x, [torch.Generator()] * 2, GuidanceStats(), normalize=True, own_losses=own)
    assert torch.allclose(own[0], torch.full((2,), 32 * 0.4**2)) and torch.allclose(own[2], torch.full((2,), 32 * 0.3**2))


@pytest.mark.parametrize("c", [1e-4, 1e4])
def test_a_float16_guides_loss_scale_leaves_the_normalised_gradient_unchanged(c):
    """Through a float16 network c l's own gradients underflow (c = 1e-4: most of them round to 0 at the
    network's output) and the normalised direction would change; the backward is seeded per sample with
    1 / |l| (gradients.seeded_grad), so it is the same for any c."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    norm = lambda c: loss_and_grad(as_guide_set([testing.float16_guide(c)]), x, [torch.Generator()] * 2, GuidanceStats(), normalize=True)  # noqa: E731
    (l1, g1), (lc, gc) = norm(1.0), norm(c)
    assert torch.allclose(gc, g1, rtol=1e-5, atol=1e-6) and torch.allclose(lc, l1, rtol=1e-5)
    # the failure it prevents: the plain gradient of c l through the same float16 network
    leaf = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(guide_loss(testing.float16_guide(1e-4), leaf).sum(), leaf)
    cos = torch.nn.functional.cosine_similarity(plain.flatten(1), g1.flatten(1)).min()
    assert cos < 0.99, f"the plain float16 gradient kept its direction (cosine {cos:.4f}): the test shows nothing"


def test_loss_scaled_multiplies_the_loss_and_keeps_the_rest():
    g = quad(-1.0)
    s = testing.loss_scaled(g, 1e3)
    x = torch.randn(3, 8, 2, 2, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(guide_loss(s, x), 1e3 * guide_loss(g, x)) and (s.name, s.target) == (g.name, g.target)


def test_pareto_lets_a_step_through_that_leaves_a_guides_loss_where_it_was():
    """Pareto refuses a trial that raises a guide's own loss, not one that leaves it equal: a hinge guide that is 0
    (with a zero gradient) wherever the step reaches takes no part, and the backward step is the quadratic's alone,
    bit for bit."""
    hinge = make_guide("hinge", f=lambda x: x, loss=lambda out, y: torch.relu(out - 5.0).flatten(1).sum(1))
    cfg = SamplerConfig(guide_normalize="grad", backward_steps=3, backward_lr=0.03, backward_normalize="grad", backward_backtrack=1,
                        backward_merit="pareto")
    x0 = 0.3 * torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    delta = lambda guides: testing.one_backward_step(cfg, guides, x0)  # noqa: E731
    alone, pair = delta(quad(-0.4)), delta([quad(-0.4), hinge])
    assert alone.abs().max() > 0 and torch.equal(pair, alone)
