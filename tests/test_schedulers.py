"""Any diffusers scheduler, guided (``SamplerConfig.scheduler``).

Unguided chains equal diffusers' own ``scale_model_input``/``step`` loop to 1e-5 (same start,
same per-sample generators); guided runs with self-recurrence finish finite and keep the
Gaussian data distribution when unguided; bad names are one UgdError line.
"""

import pytest
import torch

from ugd_core import CallableBackbone, SamplerConfig, UgdError, make_guide, sample
from ugd_core.noise import make_generators
from ugd_core.testing import gaussian_backbone

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
SHAPE, N, SEED = (4, 3, 3), 3, 7


def base_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD)


def model(z, t, cond=None):
    a = base_scheduler().alphas_cumprod[t.long()].view(-1, 1, 1, 1).to(z.dtype)
    return (1 - a).sqrt() * (z - a.sqrt() * 0.2) / (0.25 * a + 1 - a) + 0.05 * torch.tanh(3 * z)


def diffusers_loop(name: str, steps: int, z: torch.Tensor) -> torch.Tensor:
    import diffusers

    base = base_scheduler().config  # every setting, the source's defaults included (timestep spacing)
    sched = getattr(diffusers, name).from_config({k: v for k, v in base.items() if k != "_use_default_values"}, prediction_type="epsilon")
    sched.set_timesteps(steps)
    gens = make_generators([SEED + i for i in range(N)])
    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        kw = {"generator": gens} if name.startswith("EulerAncestral") else {}
        x = sched.step(model(inp, torch.full((N,), int(round(float(t))))), t, x, **kw).prev_sample
    return x


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"])
def test_unguided_chain_equals_diffusers_loop(name):
    z = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(0))
    ref = diffusers_loop(name, 12, z)
    backbone = CallableBackbone(model, SHAPE, base_scheduler())
    ours = sample(backbone, None, SamplerConfig(num_steps=12, scheduler=name), num_images=N, seed=SEED, latents=z).latents
    assert (ours - ref).abs().max().item() < 1e-5


def test_ddim_default_is_unchanged_by_the_knob():
    z = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(1))
    backbone = CallableBackbone(model, SHAPE, base_scheduler())
    a = sample(backbone, None, SamplerConfig(num_steps=8, eta=1.0), num_images=N, seed=SEED, latents=z).latents
    b = sample(backbone, None, SamplerConfig(num_steps=8, eta=1.0, scheduler="ddim"), num_images=N, seed=SEED, latents=z).latents
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["dpm++", "dpm++-sde", "unipc", "euler", "euler-a", "ddpm"])
def test_guided_runs_with_recurrence_finish_finite(name):
    guide = make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=-1.0)
    cfg = SamplerConfig(num_steps=6, scheduler=name, forward_strength=0.5, backward_steps=2, backward_lr=0.1, recurrence=3)
    out = sample(gaussian_backbone(0.5, 0.6, (8, 1, 1), base_scheduler()), guide, cfg, num_images=4, seed=0)
    assert torch.isfinite(out.latents).all()
    assert out.stats.denoiser_forward == 6 * 3
    unguided = sample(gaussian_backbone(0.5, 0.6, (8, 1, 1), base_scheduler()), None, SamplerConfig(num_steps=6, scheduler=name), num_images=4, seed=0)
    assert (out.latents.mean() + 1).abs() < (unguided.latents.mean() + 1).abs()


@pytest.mark.parametrize("name", ["dpm++", "unipc"])
def test_recurrence_with_a_multistep_solver_keeps_its_distribution(name):
    # a repeated step restores the solver's history (and skips UniPC's corrector on the re-noised z_t):
    # with k = 3 the samples keep the k = 1 chain's mean and std (DDIM needs 250 steps for this; these 25)
    def moments(k):
        cfg = SamplerConfig(num_steps=25, scheduler=name, recurrence=k)
        x = sample(gaussian_backbone(0.5, 0.6, (8, 1, 1), base_scheduler()), None, cfg, num_images=2000, seed=0).latents
        return x.mean().item(), x.std().item()

    (m1, s1), (m3, s3) = moments(1), moments(3)
    assert abs(m3 - 0.5) < abs(m1 - 0.5) + 0.01 and abs(s3 - s1) < 0.015


def test_bad_scheduler_name_is_one_line_with_a_suggestion():
    with pytest.raises(UgdError, match="did you mean DPMSolverMultistepScheduler") as err:
        SamplerConfig(scheduler="DPMSolverMultistep")
    assert "\n" not in str(err.value)
    with pytest.raises(UgdError, match="forward_on='z_prev' needs scheduler='ddim'"):
        SamplerConfig(scheduler="unipc", forward_on="z_prev")


def test_a_solver_inherits_the_backbones_timestep_spacing_and_euler_then_equals_ddim():
    """Euler in sigma space on eps is the DDIM ODE step (Karras et al. 2022, Sec. 4 / DDIM eq. 14), so with the
    backbone's own ("leading") spacing an unguided Euler chain equals ugd's DDIM chain; with the solver's own
    default ("linspace") it would start at t = 999 and differ."""
    from ugd_core.backbones import default_scheduler
    from ugd_core.sampler import DiffusersSolver

    base = default_scheduler()  # spacing left at DDIM's default, "leading"
    assert DiffusersSolver("euler", base, 10).scheduler.config.timestep_spacing == base.config.timestep_spacing
    backbone = CallableBackbone(model, (4, 4, 4), default_scheduler())
    z = torch.randn(N, 4, 4, 4, generator=torch.Generator().manual_seed(SEED))
    ddim = sample(backbone, None, SamplerConfig(num_steps=10), num_images=N, latents=z).latents
    euler = sample(backbone, None, SamplerConfig(num_steps=10, scheduler="euler"), num_images=N, latents=z).latents
    assert (ddim - euler).abs().max() < 1e-4


def test_self_recurrence_in_sigma_units_adds_the_missing_variance():
    """For a sigma-space scheduler (Euler) the sample is x = z / sqrt(a), sigma^2 = (1 - a) / a. Re-noising z_prev
    back to t (z_t = sqrt(a_t / a_prev) z_prev + sqrt(1 - a_t / a_prev) n) is then x_t = x_prev + sqrt(sigma_t^2 -
    sigma_prev^2) n (Karras et al. 2022, eq. 5: a VE step adds the variance sigma_t^2 - sigma_prev^2)."""
    from ugd_core.backbones import default_scheduler
    from ugd_core.sampler import DiffusersSolver

    solver = DiffusersSolver("euler", default_scheduler(), 10)
    sigma = solver.scheduler.sigmas.double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    n = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for i in (0, 4, 8):
        expected = x + (sigma[i] ** 2 - sigma[i + 1] ** 2).sqrt() * n
        assert torch.allclose(solver.renoise(x, i, n), expected, atol=1e-9)
