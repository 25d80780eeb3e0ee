"""Flow models through the eps-backbone adapter (ugd_kit.flow), checked on the digits world.

The exactness oracle: the shipped digits DDPM, turned into a velocity model by the change of variables
(x = s z, v = eps - x0), sampled as a flow over the sigmas of the DDPM's own DDIM chain, gives the same
images as the DDPM under DDIM: unguided, and guided with forward, backward and self-recurrence.
"""

from __future__ import annotations

import pytest
import torch

from ugd_core import SamplerConfig, sample
from ugd_core.errors import UgdError
from ugd_digits.backbone import load_backbone
from ugd_digits.guides import digit_robust_guide
from ugd_kit.flow import FlowBackbone, FlowSchedule, alpha_bar_of_sigma, sigma_of_alpha_bar, velocity_from_eps_model

torch.set_num_threads(1)


def _converted(ddpm, num_steps: int) -> FlowBackbone:
    """The DDPM as a velocity model over the sigmas of its DDIM chain of ``num_steps``."""
    from ugd_core.sampler import NoiseSchedule

    chain = NoiseSchedule.from_scheduler(ddpm.scheduler, num_steps)
    sigmas = [sigma_of_alpha_bar(a) for a in chain.alpha_bar]
    assert chain.alpha_bar_prev[-1] == 1.0  # the DDPM chain ends at a = 1, the flow's sigma = 0

    def velocity_net(z, tau, cond):
        return ddpm.eps(z, tau, cond)

    schedule = FlowSchedule.from_sigmas(lambda n: sigmas)
    v = velocity_from_eps_model(velocity_net, ddpm.scheduler.alphas_cumprod, schedule)
    return FlowBackbone(v, schedule, ddpm.sample_shape)


@pytest.fixture(scope="module")
def ddpm():
    bb = load_backbone()
    bb.unet.double()  # float64 end to end: the comparison then measures the change of variables, not float32 chaos
    return bb


def _guide():
    g = digit_robust_guide(7)
    for m in g.modules:
        m.double()
    return g


def test_change_of_variables_round_trips() -> None:
    for s in (1e-3, 0.1, 0.5, 0.9, 0.999):
        assert abs(sigma_of_alpha_bar(alpha_bar_of_sigma(s)) - s) < 1e-12


GUIDED = {
    "unguided": dict(),
    "forward": dict(forward_strength=5.0, forward_schedule="abar_normalized"),
    "forward+backward": dict(forward_strength=5.0, forward_schedule="abar_normalized", backward_steps=3, backward_lr=0.2),
    "forward+backward+recurrence": dict(forward_strength=5.0, forward_schedule="abar_normalized", backward_steps=3, backward_lr=0.2, recurrence=3),
    "backward on x0, eta=1": dict(backward_steps=2, backward_lr=0.2, backward_on="x0", eta=1.0),
}


@pytest.mark.parametrize("name", list(GUIDED))
def test_converted_ddpm_as_a_flow_equals_ddim_guided(ddpm, name: str) -> None:
    """Guided flow sampling on the converted DDPM equals the DDPM's DDIM to 1e-4."""
    n = 10
    flow = _converted(ddpm, n)
    config = SamplerConfig(num_steps=n, **GUIDED[name])
    guide = _guide() if name != "unguided" else None
    start = torch.randn(2, *ddpm.sample_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = sample(ddpm, guide, config, num_images=2, seed=3, latents=start)
    got = sample(flow, guide, config, num_images=2, seed=3, latents=start)
    err = (got.latents - ref.latents).abs().max().item()
    assert torch.isfinite(got.latents).all()
    assert err < 1e-10, f"{name}: max |flow - ddim| = {err:.2e}"  # the goal is 1e-4; float64 gives ~1e-14
    print(f"{name}: max |flow - ddim| = {err:.2e}")


def test_flow_backbones_take_only_the_ddim_step(ddpm) -> None:
    flow = _converted(ddpm, 4)
    with pytest.raises(UgdError, match="scheduler=ddim"):
        sample(flow, None, SamplerConfig(num_steps=4, scheduler="dpm++"), num_images=1, seed=0)


def test_digits_flow_backbone_samples_guided(tmp_path) -> None:
    """The shipped digits-flow weights load, and the default preset's guidance runs finite on them."""
    from ugd_digits.backbone_flow import load_flow_backbone
    from ugd_digits.presets import DIGITS_FULL

    bb = load_flow_backbone()
    out = sample(bb, digit_robust_guide(7), SamplerConfig(**{**DIGITS_FULL, "num_steps": 4}), num_images=2, seed=0)
    assert out.images.shape == (2, 1, 32, 32) and torch.isfinite(out.images).all()
    assert out.stats.guidance.nonfinite_skipped == 0
    with pytest.raises(UgdError, match="train_flow"):
        load_flow_backbone(str(tmp_path / "none.safetensors"))


def test_flow_matching_loss_targets_eps_minus_x0() -> None:
    """With a network that returns eps - x0 exactly the loss is zero: the target is v = eps - x0 at x_sigma."""
    from ugd_digits.train_flow import flow_loss

    x0, noise, sigma = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.rand(3)

    class Oracle(torch.nn.Module):
        def forward(self, x, t):
            s = (t / 1000).view(-1, 1, 1, 1)
            assert torch.allclose(x, (1 - s) * x0 + s * noise, atol=1e-6)
            return type("Out", (), {"sample": noise - x0})()

    assert flow_loss(Oracle(), x0, noise, sigma).item() < 1e-10
