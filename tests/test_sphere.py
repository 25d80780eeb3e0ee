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
    # only g's direction counts: any positive scale of g gives the same step
    assert torch.allclose(spherical_step(d, direction * 1e-6, 0.3, radius), spherical_step(d, direction * 1e6, 0.3, radius), atol=1e-5)
    # a sample whose guidance was skipped (g = 0) keeps its noise unchanged
    direction[1] = 0
    assert torch.equal(spherical_step(d, direction, 0.3, radius)[1], d[1])


def quad(scale: float = 1.0):
    return make_guide("quad", f=lambda x: x, loss=lambda out, y: scale * (out - y).pow(2).flatten(1).sum(1), target=0.9)


@pytest.mark.parametrize("knobs", [dict(eta=0.0), dict(scheduler="DPMSolverMultistepScheduler")])
def test_the_sphere_needs_the_noise_of_an_ancestral_ddim_step(knobs):
    with pytest.raises(UgdError, match="needs scheduler='ddim' and eta > 0.*--preset auto-eps"):
        SamplerConfig(**dict(AUTO, **knobs))


@pytest.mark.parametrize("given, preset", [(dict(), "auto"), (dict(scheduler="dpm++"), "auto-eps"), (dict(eta=0.0), "auto-eps"),
                                            (dict(scheduler="ddim"), "auto")])
def test_the_default_preset_follows_the_step_it_guides(given, preset):
    """With no --preset the digits backbone's default is auto; where a step draws no noise (another scheduler,
    eta = 0) it is auto-eps, whose forward step lands on eps, and the run's record names it."""
    from cli.spec import RunSpec, resolve_config
    from ugd_core.registry import get_registry

    cfg, name = resolve_config(RunSpec(guides=["digit:label=3"], overrides=given), get_registry())
    assert name == preset and cfg.forward_on == ("sphere" if preset == "auto" else "eps")


def test_auto_eps_runs_with_another_scheduler_and_ignores_the_loss_scale():
    backbone = testing.gaussian_backbone(0.2, 0.5, (2, 4, 4), default_scheduler())
    cfg = SamplerConfig(**dict(PRESETS["auto-eps"][1], num_steps=8, scheduler="DPMSolverMultistepScheduler"))
    a = sample(backbone, quad(1.0), cfg, num_images=2, seed=4).images
    b = sample(backbone, quad(1e3), cfg, num_images=2, seed=4).images
    unguided = sample(backbone, None, cfg, num_images=2, seed=4).images
    assert torch.isfinite(a).all() and (a - b).abs().max() <= 1e-4
    assert (a - unguided).abs().max() > 1e-2
