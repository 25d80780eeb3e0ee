"""Unguided ugd chains equal diffusers' own ``DDIMScheduler.step`` loop to 1e-5.

Same start latents, same per-step noise (passed to diffusers as ``variance_noise``), the
same model output; every spacing, epsilon and v-prediction, eta 0 and 1, on Stable
Diffusion's scheduler config (scaled_linear 0.00085-0.012, ``set_alpha_to_one=False``,
``steps_offset=1``: the last step lands on ``final_alpha_cumprod`` = a_0) and on the
default DDPM config.
"""

import pytest
import torch

from ugd_core import CallableBackbone, SamplerConfig, sample
from ugd_core.noise import make_generators, randn
from ugd_core.testing import LinearDDPMSchedule

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
SHAPE, N, SEED = (4, 3, 3), 3, 11


def model(z: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """A smooth, timestep-dependent stand-in network output (read as eps or v): near the exact eps of
    N(0.2, 0.5^2) data under the linear schedule, so that the samples stay O(1)."""
    a = LinearDDPMSchedule().alphas_cumprod[t].view(-1, 1, 1, 1).to(z.dtype)
    return (1 - a).sqrt() * (z - a.sqrt() * 0.2) / (0.25 * a + 1 - a) + 0.05 * torch.tanh(3 * z)


def diffusers_chain(config: dict, steps: int, eta: float, z: torch.Tensor) -> torch.Tensor:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**config)
    sched.set_timesteps(steps)
    gens = make_generators([SEED + i for i in range(N)])
    for t in sched.timesteps:
        out = model(z, torch.full((N,), int(t)))
        noise = randn(SHAPE, gens, z.device) if eta > 0 else None
        z = sched.step(out, t, z, eta=eta, variance_noise=noise).prev_sample
    return z


def ugd_chain(scheduler, prediction_type: str, steps: int, eta: float, z: torch.Tensor) -> torch.Tensor:
    backbone = CallableBackbone(model, SHAPE, scheduler, prediction_type=prediction_type)
    return sample(backbone, None, SamplerConfig(num_steps=steps, eta=eta), num_images=N, seed=SEED, latents=z).latents


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])  # 0.5: eta and eta^2 differ (DDIM eq. 16's sigma is linear in eta)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_sd_config_chain_equals_diffusers(spacing, prediction_type, eta):
    from diffusers import DDIMScheduler

    config = dict(SD, timestep_spacing=spacing, prediction_type=prediction_type)
    z = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(0))
    ref = diffusers_chain(config, 7, eta, z)
    ours = ugd_chain(DDIMScheduler(**config), prediction_type, 7, eta, z)
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_linear_ddpm_stand_in_equals_diffusers_default_config(eta):
    # LinearDDPMSchedule has no final_alpha_cumprod: the last step lands on a_prev = 1 (set_alpha_to_one=True)
    config = dict(clip_sample=False, set_alpha_to_one=True)
    z = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(1))
    ref = diffusers_chain(config, 20, eta, z)
    ours = ugd_chain(LinearDDPMSchedule(), "epsilon", 20, eta, z)
    assert (ours - ref).abs().max().item() < 1e-5


def test_last_step_lands_on_final_alpha_cumprod():
    from diffusers import DDIMScheduler

    from ugd_core import NoiseSchedule

    sched = DDIMScheduler(**SD)
    chain = NoiseSchedule.from_scheduler(sched, 10)
    assert chain.timesteps[-1] == 1  # steps_offset = 1
    assert chain.alpha_bar_prev[-1] == pytest.approx(float(sched.final_alpha_cumprod)) == pytest.approx(0.99915, abs=1e-5)
