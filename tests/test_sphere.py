"""The spherical forward step (``forward_on="sphere"``, DSG: Yang et al. 2024, eq. 10-11), and the default where a
step draws no noise. The DSG step itself equals DSG's published update in tests/test_peer_references.py."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core import testing
from ugd_core.backbones import default_scheduler
from ugd_core.errors import UgdError
from ugd_core.presets import PRESETS
from ugd_core.sampler import spherical_step

AUTO = PRESETS["auto"][1]


def norms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1)


def test_the_step_lies_on_the_sphere_and_turns_by_the_rate():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(3, 4, 5, 5, generator=g)
    direction = torch.randn(3, 4, 5, 5, generator=g)
    radius = 5.0
    for rate in (0.0, 0.2, 0.7, 1.0):
        out = spherical_step(d, direction, rate, radius)
        assert torch.allclose(norms(out), torch.full((3,), radius), rtol=1e-5)
    # rate 0 keeps the noise's direction; rate 1 is the pure descent direction -g
    unit = lambda v: v / norms(v).view(-1, 1, 1, 1)  # noqa: E731
    assert torch.allclose(unit(spherical_step(d, direction, 0.0, radius)), unit(d), atol=1e-6)
    assert torch.allclose(unit(spherical_step(d, direction, 1.0, radius)), -unit(direction), atol=1e-6)
    # only g's direction counts: any positive scale of g gives the same step, which g turns (0.35 from rate 0's)
    assert torch.allclose(spherical_step(d, direction * 1e-6, 0.3, radius), spherical_step(d, direction * 1e6, 0.3, radius), atol=1e-5)
    assert (spherical_step(d, direction, 0.3, radius) - spherical_step(d, direction, 0.0, radius)).abs().max() > 0.1
    # a sample whose guidance was skipped (g = 0) keeps its noise unchanged
    direction[1] = 0
    assert torch.equal(spherical_step(d, direction, 0.3, radius)[1], d[1])


def quad(scale: float = 1.0):
    return make_guide("quad", f=lambda x: x, loss=lambda out, y: scale * (out - y).pow(2).flatten(1).sum(1), target=0.9)


@pytest.mark.parametrize("knobs", [dict(eta=0.0), dict(scheduler="DPMSolverMultistepScheduler"), dict(scheduler="euler-a")])
def test_the_sphere_needs_a_step_whose_noise_it_can_turn(knobs):
    """DDIM with eta = 0 and DPM-Solver++'s ODE form draw no noise; Euler-ancestral draws its own (a generator,
    no variance_noise): one line naming the schedulers that work and auto-eps, before any sampling."""
    with pytest.raises(UgdError, match="turns each step's noise.*dpm\\+\\+-sde.*--preset auto-eps"):
        SamplerConfig(**dict(AUTO, **knobs))


def test_the_probe_knows_which_steps_take_their_noise_from_the_caller():
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    from ugd_core.schedules import scheduler_draws_noise, step_takes_noise

    assert step_takes_noise(DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"))
    assert not step_takes_noise(DPMSolverMultistepScheduler())  # the ODE form ignores variance_noise
    assert not step_takes_noise(DDIMScheduler())  # diffusers' DDIM adds noise only with an eta the sampler does not pass
    assert not step_takes_noise(EulerAncestralDiscreteScheduler())  # its own generator only
    assert scheduler_draws_noise("dpm++-sde") and not scheduler_draws_noise("dpm++")


@pytest.mark.parametrize("given, preset", [(dict(), "auto"), (dict(scheduler="dpm++"), "auto-eps"), (dict(eta=0.0), "auto-eps"),
                                            (dict(scheduler="ddim"), "auto"), (dict(scheduler="dpm++-sde"), "auto")])
def test_the_default_preset_follows_the_step_it_guides(given, preset):
    """With no --preset the digits backbone's default is auto, also with a stochastic DPM-Solver++ (dpm++-sde),
    whose noise it turns; where a step draws no noise it can turn (DPM-Solver++'s ODE form, eta = 0) it is
    auto-eps, whose forward step lands on eps, and the run's record names it."""
    from cli.spec import RunSpec, resolve_config
    from ugd_core.registry import get_registry

    cfg, name = resolve_config(RunSpec(guides=["digit:label=3"], overrides=given), get_registry())
    assert name == preset and cfg.forward_on == ("sphere" if preset == "auto" else "eps")


def test_auto_eps_runs_with_another_scheduler_and_ignores_the_loss_scale():
    """The forward step on eps acts (the images move by 0.24 without it), and so does the line search (4e-3)."""
    backbone = testing.gaussian_backbone(0.2, 0.5, (2, 4, 4), default_scheduler())
    cfg = SamplerConfig(**dict(PRESETS["auto-eps"][1], num_steps=8, scheduler="DPMSolverMultistepScheduler"))
    a = sample(backbone, quad(1.0), cfg, num_images=2, seed=4).images
    b = sample(backbone, quad(1e3), cfg, num_images=2, seed=4).images
    unguided = sample(backbone, None, cfg, num_images=2, seed=4).images
    assert torch.isfinite(a).all() and (a - b).abs().max() <= 1e-4
    assert (a - unguided).abs().max() > 1e-2
    assert (a - sample(backbone, quad(1.0), cfg.updated(forward_strength=0.0), num_images=2, seed=4).images).abs().max() > 1e-1
    assert (a - sample(backbone, quad(1.0), cfg.updated(backward_backtrack=0), num_images=2, seed=4).images).abs().max() > 1e-3


def test_auto_steps_through_the_stochastic_dpm_solver_and_ignores_the_loss_scale():
    """The same default with DPM-Solver++ (SDE form): the sampler draws each step's noise per image, turns it
    toward the guides (DSG's step) and hands it to the scheduler's step as variance_noise. The turn acts (the
    images move by 0.32 without it); the line search refuses none of its 120 trials here (one quadratic guide)."""
    backbone = testing.gaussian_backbone(0.2, 0.5, (2, 4, 4), default_scheduler())
    cfg = SamplerConfig(**dict(AUTO, num_steps=8, scheduler="dpm++-sde"))
    a = sample(backbone, quad(1.0), cfg, num_images=3, seed=4).images
    b = sample(backbone, quad(1e3), cfg, num_images=3, seed=4).images
    unguided = sample(backbone, None, cfg, num_images=3, seed=4).images
    assert torch.isfinite(a).all() and (a - b).abs().max() <= 1e-4
    assert (a - sample(backbone, quad(1.0), cfg.updated(forward_strength=0.0), num_images=3, seed=4).images).abs().max() > 1e-1
    own = lambda x: (x - 0.9).pow(2).flatten(1).mean(1)  # noqa: E731  the guide's own loss, per sample
    assert (own(a) < 0.5 * own(unguided)).all()


def test_an_unguided_stochastic_dpm_solver_run_is_diffusers_loop_with_each_images_noise():
    """Reference: diffusers' DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++") stepped by hand with
    the exact eps, each step's variance_noise drawn from image i's own generator (seed s + i) after its eps;
    ugd's run equals it to 1e-6."""
    from diffusers import DPMSolverMultistepScheduler

    from ugd_core.noise import make_generators, randn

    base = default_scheduler()
    backbone = testing.gaussian_backbone(0.2, 0.5, (2, 4, 4), base)
    cfg = SamplerConfig(**dict(AUTO, num_steps=6, scheduler="dpm++-sde", recurrence=1))
    got = sample(backbone, None, cfg, num_images=2, seed=7).latents

    settings = {k: v for k, v in base.config.items() if k != "_use_default_values"}
    sched = DPMSolverMultistepScheduler.from_config(settings, prediction_type="epsilon", algorithm_type="sde-dpmsolver++")
    sched.set_timesteps(6)
    gens = make_generators([7, 8])
    eps_of = testing.gaussian_eps(base.alphas_cumprod, 0.2, 0.5)
    x = randn((2, 4, 4), gens, "cpu")
    for t in sched.timesteps:
        eps = eps_of(x, torch.full((2,), int(t)))
        x = sched.step(eps, t, x, variance_noise=randn((2, 4, 4), gens, "cpu")).prev_sample
    assert torch.allclose(got, x, atol=1e-6)


def test_the_solver_refuses_to_turn_a_noise_its_scheduler_does_not_take():
    """The config check runs on the scheduler class's defaults; the solver checks again on the scheduler it
    built from the backbone's settings, before any step."""
    from ugd_core.sampler import DiffusersSolver

    with pytest.raises(UgdError, match="DPMSolverMultistepScheduler as configured takes none from the sampler"):
        DiffusersSolver("dpm++", default_scheduler(), 4, turn_noise=True)
    assert DiffusersSolver("dpm++-sde", default_scheduler(), 4, turn_noise=True).turns_noise


@pytest.mark.parametrize("rate", [-0.1, 1.5, 1e30])
def test_a_rate_outside_0_1_on_the_sphere_is_one_line(rate):
    """DSG's guidance rate turns the step's noise toward the guides: 1 is a full turn, and only the gradient's
    direction counts, so a larger value has nothing to scale (it once sampled silently)."""
    with pytest.raises(UgdError, match=r"forward_strength=.* is DSG's guidance rate with forward_on=sphere: it must lie in \[0, 1\]"):
        SamplerConfig(**dict(AUTO, forward_strength=rate))
    SamplerConfig(**dict(AUTO, forward_strength=1.0))
