"""Every registered preset (every installed plugin's) runs finite on the tiny Stable Diffusion and SDXL
pipelines, a few steps, and the default preset's samples do not depend on the guide's loss scale there.

Latent backbones decode z into images of another shape (4 latent channels at 8 px -> 3 channels at
16 px): a preset whose probes or steps were drawn in z_t's shape instead of the image's fails here
(``tfg``'s shared smoothing probes once did)."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core.guidance import guide_loss
from ugd_core.registry import load_registry
from ugd_core.testing import float16_guide
from ugd_sd.testing import tiny_stable_diffusion

REGISTRY = load_registry()  # ugd's own presets and every installed plugin's
PRESET_NAMES = sorted(REGISTRY.entries["preset"])


def bright(level: float = 0.3, scale: float = 1.0):
    return make_guide("bright", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: scale * (m - c) ** 2, target=level)


def test_the_preset_list_covers_the_peers_and_the_default():
    assert {"auto", "ugd", "dps", "freedom", "mpgd", "lgd", "tfg"} <= set(PRESET_NAMES)


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def backbone(request):
    return tiny_stable_diffusion(kind=request.param)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_is_finite_on_a_latent_backbone(backbone, name):
    settings = dict(REGISTRY.get("preset", name).settings, num_steps=2)
    if settings.get("recurrence", 1) > 2:
        settings["recurrence"] = 2  # the same code path at less cost
    out = sample(backbone, bright(), SamplerConfig(**settings), num_images=1, seed=0, prompt="a cat")
    assert torch.isfinite(out.images).all() and torch.isfinite(out.latents).all()
    assert out.images.shape[1] == 3


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++-sde"])
def test_the_default_steers_every_sample_toward_its_guide_on_a_latent_backbone(backbone, scheduler):
    """Not only "guidance acted": with the default preset every sample ends nearer the guide's target than the
    unguided sample of its seed (measured at 3 steps on the two pipelines: 0.75-0.89x of unguided's loss with DDIM,
    0.66-0.84x on DPM-Solver++'s SDE form, whose noise the spherical step turns in the latent's shape)."""
    cfg = SamplerConfig(**dict(REGISTRY.get("preset", "auto").settings, num_steps=3, scheduler=scheduler))
    guide = bright()
    guided = sample(backbone, guide, cfg, num_images=4, seed=1, prompt="a cat").images
    unguided = sample(backbone, None, cfg, num_images=4, seed=1, prompt="a cat").images
    loss, free = guide_loss(guide, guided), guide_loss(guide, unguided)
    assert (loss < free).all(), (loss, free)


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_the_default_is_loss_scale_free_on_stable_diffusion(c):
    cfg = SamplerConfig(**dict(REGISTRY.get("preset", "auto").settings, num_steps=3))
    ref = sample(tiny_stable_diffusion(), bright(), cfg, num_images=2, seed=1, prompt="a cat").images
    scaled = sample(tiny_stable_diffusion(), bright(scale=c), cfg, num_images=2, seed=1, prompt="a cat").images
    unguided = sample(tiny_stable_diffusion(), None, cfg, num_images=2, seed=1, prompt="a cat").images
    assert (scaled - ref).abs().max() <= 1e-4
    assert (unguided - ref).abs().max() > 1e-3  # guidance acted


@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-4), ("fp16", 1 / 255)])
def test_the_default_is_loss_scale_free_with_a_float16_guide(dtype, tol):
    """A float16 guide network: c l's gradients would underflow inside it for c = 1e-3 (0.15-0.16 of change in
    the image, measured without the per-sample seed of gradients.seeded_grad). With the seed the samples agree
    to 1e-4 on a float32 pipeline (measured 3e-5 and 5e-5) and to half an 8-bit level on a float16 one, whose
    own rounding the unit gradient's last bits reach (measured 2.2e-3)."""
    cfg = SamplerConfig(**dict(REGISTRY.get("preset", "auto").settings, num_steps=3, dtype=dtype))
    ref = sample(tiny_stable_diffusion(), float16_guide(1.0), cfg, num_images=2, seed=1, prompt="a cat").images
    for c in (1e-3, 1e3):
        scaled = sample(tiny_stable_diffusion(), float16_guide(c), cfg, num_images=2, seed=1, prompt="a cat").images
        assert (scaled - ref).abs().max() <= tol, c


def test_polyak_steps_are_measured_in_the_latents_units():
    """backward_normalize=polyak compares each guide's Polyak step with lr in x0's own units, here the latent's:
    for one guide the step's gain is min(1, rho / lr) with rho = l / (n RMS(grad_z l)), n the latent's elements,
    the gradient through the VAE's decoder (a length taken in the decoded image's units would differ by the
    decoder's gain)."""
    from ugd_core.gradients import Smoothing, per_sample_rms
    from ugd_core.guidance import as_guide_set
    from ugd_core.sampler import UniversalGuidance

    backbone = tiny_stable_diffusion()
    z = 0.5 * torch.randn(2, *backbone.sample_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        level = float(backbone.decode(z).mean()) + 0.01  # near the guide's zero: its Polyak step is short
    guide = bright(level)
    cfg = SamplerConfig(guide_normalize="grad", backward_normalize="polyak", backward_steps=1)
    run = UniversalGuidance(backbone, as_guide_set(guide), cfg, [torch.Generator()])
    lr = 0.03
    scored = run._delta_loss_grad(z, torch.zeros_like(z), torch.zeros(2, dtype=torch.long), Smoothing(), None, lr)
    leaf = z.clone().requires_grad_(True)
    loss = guide_loss(guide, backbone.decode(leaf))
    (g,) = torch.autograd.grad(loss.sum(), leaf)
    rho = loss.detach() / (z[0].numel() * per_sample_rms(g))
    assert (rho < lr).all()  # the case where the cap does not bind
    assert torch.allclose(scored.gain, rho / lr, rtol=1e-4)
