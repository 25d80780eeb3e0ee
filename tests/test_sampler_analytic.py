"""The sampler against closed-form answers: data x0 ~ N(mu, s^2 I) has an exact noise predictor.

z_t = sqrt(a) x0 + sqrt(1-a) n  =>  E[n | z_t] = sqrt(1-a) (z_t - sqrt(a) mu) / (a s^2 + 1 - a).
A sign or scale error in forward guidance, backward guidance, the DDIM step or
the recurrence's re-noising makes one of these fail.
"""

import pytest
import torch

from ugd_core import CallableBackbone, SamplerConfig, make_guide, sample
from ugd_core import testing
from ugd_core.backbones import default_scheduler

MU, S, DIM, N = 0.5, 0.6, 8, 3000
Y = -1.0  # target of the quadratic guide


def gaussian_backbone() -> CallableBackbone:
    return testing.gaussian_backbone(MU, S, (DIM, 1, 1), default_scheduler())


def quadratic_guide():
    return make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=Y)


def run(config, guides=None, n=N, **kw):
    return sample(gaussian_backbone(), guides, config, num_images=n, generator=torch.Generator().manual_seed(0), **kw)


# DDIM under-disperses a Gaussian by a discretisation error that vanishes with the
# step count (about 8% of the std at 30 steps, under 1% at 250), so the
# distribution checks use 250 steps.


def test_unguided_ddim_reproduces_the_data_distribution():
    x = run(SamplerConfig(num_steps=250)).latents
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std().item() - S) < 0.02


def test_ancestral_sampling_also_reproduces_it():
    x = run(SamplerConfig(num_steps=250, eta=1.0)).latents
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std().item() - S) < 0.03


def test_ddim_step_matches_diffusers():
    from diffusers import DDIMScheduler

    from ugd_core import NoiseSchedule, ddim_step

    sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
    chain = NoiseSchedule.from_scheduler(sched, 20)
    z, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for i in (0, 10, 19):
        t = chain.timesteps[i]
        ref = sched.step(eps, t, z, eta=0.0).prev_sample
        ours = ddim_step(z, eps, chain.alpha_bar[i], chain.alpha_bar_prev[i], 0.0, None)
        assert torch.allclose(ours, ref, atol=1e-5)


def test_forward_guidance_moves_the_mean_toward_the_target_monotonically():
    dists = []
    for strength in [0.0, 0.25, 0.5, 1.0, 2.0]:
        x = run(SamplerConfig(num_steps=30, forward_strength=strength), quadratic_guide(), n=500).latents
        dists.append(abs(x.mean().item() - Y))
    assert all(a > b for a, b in zip(dists, dists[1:])), dists
    assert dists[-1] < 0.5 * dists[0]


def test_backward_guidance_with_enough_steps_puts_x0_hat_on_the_target():
    seen = []
    cfg = SamplerConfig(num_steps=10, backward_steps=30, backward_lr=0.2)
    out = run(cfg, quadratic_guide(), n=64, callback_on_step_end=lambda i, t, d: seen.append(d["x0"].clone()))
    for x0 in seen:
        assert torch.allclose(x0, torch.full_like(x0, Y), atol=1e-3)
    assert torch.allclose(out.latents, torch.full_like(out.latents, Y), atol=1e-3)
    assert out.stats.denoiser_backward == 0  # backward guidance never differentiates the denoiser


def test_recurrence_keeps_the_unguided_distribution():
    x = run(SamplerConfig(num_steps=250, recurrence=3)).latents
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std().item() - S) < 0.02


def test_forward_guidance_costs_one_denoiser_pass_per_step():
    out = run(SamplerConfig(num_steps=10, forward_strength=0.1, recurrence=2), quadratic_guide(), n=8)
    assert out.stats.denoiser_forward == 20
    assert out.stats.denoiser_backward == 20


def test_forward_min_abar_skips_forward_guidance_exactly_where_a_t_is_below_it():
    from ugd_core import NoiseSchedule

    chain = NoiseSchedule.from_scheduler(default_scheduler(), 10)
    floor = (chain.alpha_bar[1] + chain.alpha_bar[2]) / 2  # the two noisiest steps lie below it
    out = run(SamplerConfig(num_steps=10, forward_strength=0.1, forward_min_abar=floor), quadratic_guide(), n=8)
    assert out.stats.denoiser_backward == 8  # one backward pass per guided step: steps 0 and 1 skipped
    windowed = run(SamplerConfig(num_steps=10, forward_strength=0.1, forward_window=(0.2, 1.0)), quadratic_guide(), n=8)
    assert torch.equal(out.latents, windowed.latents)  # the same as a window starting at step 2


def test_naive_guidance_differentiates_only_the_guide():
    out = run(SamplerConfig(num_steps=10, forward_strength=0.1, forward_input="zt"), quadratic_guide(), n=8)
    assert out.stats.denoiser_backward == 0
    assert out.stats.guidance.guide_backward == 10


def test_overflowing_guidance_never_reaches_the_sample():
    # finite gradients so large that eps_hat overflows for one sample: that sample keeps its unguided eps
    huge = make_guide("huge", f=lambda x: x, loss=lambda out, y: out.flatten(1).sum(1) * torch.tensor([1e38, 0.0]), target=None)
    out = run(SamplerConfig(num_steps=5, forward_strength=1e10, backward_steps=1, backward_lr=1e10), huge, n=2)
    assert torch.isfinite(out.latents).all()
    assert out.stats.guidance.nonfinite_skipped > 0


def test_a_broken_guide_in_a_composition_is_skipped_alone_and_named():
    # sample 0's loss from 'broken' is NaN (with a NaN gradient): only that guide is skipped there
    import pytest
    from ugd_core import GuideSet, WeightedGuide

    def nan_for_first(out, y):
        return out.flatten(1).sum(1) * torch.tensor([float("nan"), 0.0])

    broken = make_guide("broken", f=lambda x: x, loss=nan_for_first, target=None)
    config = SamplerConfig(num_steps=10, forward_strength=0.1)
    pair = GuideSet([WeightedGuide(quadratic_guide(), 1.0), WeightedGuide(broken, 1.0)])
    with pytest.warns(RuntimeWarning, match="from guide 'broken'"):
        out = run(config, pair, n=2)
    alone = run(config, quadratic_guide(), n=2)
    assert torch.isfinite(out.latents).all()
    assert torch.allclose(out.latents, alone.latents, atol=1e-5)  # the quadratic guide still guided both samples
    assert out.stats.guidance.nonfinite_skipped == 10  # sample 0 at each of the 10 steps


def test_timestep_aware_guide_gets_the_backbones_training_timesteps():
    from ugd_core.sampler import NoiseSchedule

    seen = []

    def f(x, t):
        seen.append(t.clone())
        return x * (1 + t.view(-1, 1, 1, 1) / 1000)

    guide = make_guide("noisy-quad", f=f, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=Y, timestep_aware=True)
    out = run(SamplerConfig(num_steps=6, forward_strength=0.05, forward_input="zt"), guide, n=4)
    expected = NoiseSchedule.from_scheduler(gaussian_backbone().scheduler, 6).timesteps
    assert [int(t[0]) for t in seen] == expected
    assert all(t.dtype == torch.long and t.shape == (4,) and (t == t[0]).all() for t in seen)
    assert out.stats.denoiser_backward == 0  # classifier guidance: only the guide is differentiated
    assert abs(out.latents.mean().item() - Y) < abs(run(SamplerConfig(num_steps=6), n=4).latents.mean().item() - Y)


def test_guide_sees_its_networks_dtype_and_returns_float32_or_the_runs_float64():
    from torch import nn

    from ugd_core import guide_loss

    net = nn.Conv2d(DIM, 1, 1).double()
    dtypes = []

    def f(x):
        dtypes.append(x.dtype)
        return net(x)

    guide = make_guide("f64-net", f=f, loss=lambda out, y: out.flatten(1).sum(1), modules=[net])
    loss = guide_loss(guide, torch.randn(2, DIM, 1, 1))
    assert dtypes == [torch.float64] and loss.dtype == torch.float32
    assert guide_loss(guide, torch.randn(2, DIM, 1, 1, dtype=torch.float64)).dtype == torch.float64  # a float64 run
    as_module = make_guide("module-f", f=net, loss=lambda out, y: out.flatten(1).sum(1))
    assert guide_loss(as_module, torch.randn(2, DIM, 1, 1, dtype=torch.float16)).dtype == torch.float32
    plain = make_guide("plain", f=lambda x: x, loss=lambda out, y: out.flatten(1).sum(1))
    x16 = torch.randn(2, DIM, 1, 1, dtype=torch.bfloat16)
    assert guide_loss(plain, x16).dtype == torch.float32  # no network: the images are left as they are
    out = run(SamplerConfig(num_steps=4, forward_strength=0.1, backward_steps=1), guide, n=2)
    assert torch.isfinite(out.latents).all() and out.latents.dtype == torch.float32


@pytest.mark.parametrize("target", [-3.0, 3.0])
@pytest.mark.parametrize("backtrack", [0, 2])
def test_clip_x0_projects_the_backward_iterate_onto_the_data_range(target, backtrack):
    """The guide pulls x0_hat beyond either end of [-1, 1]; the official code clamps the iterate, so x0_hat stops at
    the bound (with the line search, each trial is projected too, so it never passes it)."""
    seen = []
    far = make_guide("far", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=target)
    search = dict(backward_normalize="grad", backward_backtrack=backtrack) if backtrack else {}
    cfg = SamplerConfig(num_steps=5, backward_steps=20, backward_lr=0.5, clip_x0=True, **search)
    run(cfg, far, n=8, callback_on_step_end=lambda i, t, d: seen.append(d["x0"].clone()))
    bound = 1.0 if target > 0 else -1.0
    for x0 in seen:
        assert (x0.abs() <= 1 + 1e-6).all()
        if not backtrack:
            assert torch.allclose(x0, torch.full_like(x0, bound), atol=1e-6)
    assert torch.allclose(seen[-1], torch.full_like(seen[-1], bound), atol=1e-2)


def test_one_adam_step_from_zero_is_minus_lr_times_the_gradients_sign():
    """The official backward guidance's optimiser (Adam, Kingma & Ba 2015, Algorithm 1): from delta = 0 its first
    bias-corrected step is -lr g / (|g| + eps), eps = 1e-8; for (x0 + delta + 0.4)^2 summed, g = 2 (x0 + 0.4).
    (SGD would step -lr g.)"""
    x0 = 0.3 * torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    quad = make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=-0.4)
    delta = testing.one_backward_step(SamplerConfig(backward_steps=1, backward_lr=0.01, backward_optimizer="adam"), quad, x0)
    g = 2 * (x0 + 0.4)
    assert torch.allclose(delta, -0.01 * g / (g.abs() + 1e-8), atol=1e-9)


def test_a_zero_order_gradient_of_a_linear_loss_is_its_coefficients():
    """The antithetic two-point estimate (l(x + s u) - l(x - s u)) / (2 s) u, averaged over probes u ~ N(0, I), has
    expectation grad l; for l = <c, x> it is c (Nesterov & Spokoiny 2017, eq. 2.4 with the symmetric difference)."""
    from ugd_core.gradients import GuidanceStats, loss_and_grad
    from ugd_core.guidance import as_guide_set
    from ugd_core.noise import make_generators

    c = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    linear = make_guide("linear", f=lambda x: x, loss=lambda out, y: (out * c).flatten(1).sum(1), differentiable=False)
    _, g = loss_and_grad(as_guide_set(linear), torch.zeros(1, 4, 1, 1), make_generators([0]), GuidanceStats(), zo_probes=20000, zo_std=0.05)
    assert torch.allclose(g, c, rtol=0.1, atol=0.1)


def test_log_mean_exp_of_equal_probes_is_the_loss_itself():
    """TFG's smoothing reduction -log (1/n) sum_j exp(-l_j): for n probes that all see the same image it is l."""
    from ugd_core.gradients import GuidanceStats, Smoothing, loss_and_grad
    from ugd_core.guidance import as_guide_set
    from ugd_core.noise import make_generators

    x = 0.3 * torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    quad = as_guide_set(make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=-0.4))
    same = Smoothing(0.1, 4, "log_mean_exp", offsets=[torch.zeros_like(x[0])] * 4)
    smoothed, _ = loss_and_grad(quad, x, make_generators([0, 1, 2]), GuidanceStats(), same)
    plain, _ = loss_and_grad(quad, x, make_generators([0, 1, 2]), GuidanceStats())
    assert torch.allclose(smoothed, plain, rtol=1e-6)


def test_every_builtin_preset_moves_the_mean_toward_the_target():
    from ugd_core.presets import PRESETS

    base = abs(run(SamplerConfig(num_steps=20), n=64).latents.mean().item() - Y)
    for name, (_, settings, _) in PRESETS.items():
        x = run(SamplerConfig(**{**settings, "num_steps": 20}), quadratic_guide(), n=64).latents
        assert torch.isfinite(x).all(), name
        assert abs(x.mean().item() - Y) < base, name
