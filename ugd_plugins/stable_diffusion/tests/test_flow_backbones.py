"""SD3 / SD3.5 and FLUX.1 backbones on tiny random configs of the real classes: unguided chains against
diffusers' own pipeline loops, every preset on a flow (the defaults steering it), half precision, memory knobs, bad input."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core.errors import UgdError
from ugd_core.presets import PRESETS
from ugd_sd.flow import FluxBackbone, StableDiffusion3Backbone
from ugd_sd.testing import save_tiny_flow_pipeline, tiny_flux_pipeline, tiny_sd3_pipeline

torch.set_num_threads(1)
SEQ = 16  # max_sequence_length of the tiny text encoders, given to both diffusers and ugd


def bright(level: float = 0.3):
    return make_guide("bright", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=level)


def start(bb, n=2, seed=0):
    return torch.randn(n, *bb.sample_shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", ["sd3", "sd3-no-t5", "sd3.5-dynamic-shift"])
def test_sd3_unguided_chain_equals_the_diffusers_pipeline(variant):
    pipe = tiny_sd3_pipeline(t5=variant != "sd3-no-t5", dynamic_shift=variant == "sd3.5-dynamic-shift")
    bb = StableDiffusion3Backbone.from_pipeline(pipe, max_sequence_length=SEQ)
    z = start(bb)
    ref = pipe(prompt=["a cat"] * 2, num_inference_steps=5, guidance_scale=4.0, latents=z.clone(), output_type="latent",
               max_sequence_length=SEQ, height=bb.height, width=bb.width).images
    got = sample(bb, None, SamplerConfig(num_steps=5, cfg_scale=4.0), num_images=2, latents=z, prompt="a cat")
    err = (got.latents - ref).abs().max().item()
    assert err < 1e-5, f"max |ugd - diffusers| = {err:.2e}"


@pytest.mark.parametrize("dev", [True, False], ids=["flux-dev", "flux-schnell"])
def test_flux_unguided_chain_equals_the_diffusers_pipeline(dev):
    pipe = tiny_flux_pipeline(guidance_embeds=dev)
    bb = FluxBackbone.from_pipeline(pipe, height=16, width=16, max_sequence_length=SEQ, guidance=3.5)
    z = start(bb)
    n, c, h, w = z.shape
    ref = pipe(prompt=["a cat"] * 2, num_inference_steps=5, guidance_scale=3.5, latents=pipe._pack_latents(z.clone(), n, c, h, w),
               output_type="latent", max_sequence_length=SEQ, height=16, width=16).images
    ref = pipe._unpack_latents(ref, 16, 16, pipe.vae_scale_factor)
    got = sample(bb, None, SamplerConfig(num_steps=5), num_images=2, latents=z, prompt="a cat")
    err = (got.latents - ref).abs().max().item()
    assert err < 1e-5, f"max |ugd - diffusers| = {err:.2e}"
    assert bb.mu() == pytest.approx(0.5 + (1.15 - 0.5) / (64 - 4) * (16 - 4))  # calculate_shift at 4x4 packed tokens


@pytest.fixture(scope="module")
def flux():
    return FluxBackbone.from_pipeline(tiny_flux_pipeline(), height=16, width=16, max_sequence_length=SEQ)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_finite_on_a_flow(flux, preset):
    settings = {**PRESETS[preset][1], "num_steps": 3}
    out = sample(flux, bright(), SamplerConfig(**settings), num_images=2, seed=1, prompt="a cat")
    assert torch.isfinite(out.images).all() and out.images.abs().max() <= 1
    assert out.stats.guidance.nonfinite_skipped == 0


@pytest.mark.parametrize("preset", ["auto", "auto-eps"])
def test_the_defaults_steer_every_flow_sample_toward_the_target(flux, preset):
    """The default (`auto`; `auto-eps` with a scheduler that draws no noise) on a flow, untuned: every sample ends
    brighter than the unguided sample of its seed, toward the target 0.9 (measured: mean +0.06 to +0.09 against
    -0.025 to -0.002 unguided, 4 steps)."""
    cfg = SamplerConfig(**{**PRESETS[preset][1], "num_steps": 4})
    guided = sample(flux, bright(0.9), cfg, num_images=4, seed=2, prompt="a cat").images.mean(dim=(1, 2, 3))
    free = sample(flux, None, cfg, num_images=4, seed=2, prompt="a cat").images.mean(dim=(1, 2, 3))
    assert (guided > free + 0.03).all(), (guided, free)


def test_guidance_moves_a_flow_toward_the_target(flux):
    cfg = dict(num_steps=4, backward_steps=5, backward_lr=0.5, backward_optimizer="adam")
    free = sample(flux, None, SamplerConfig(num_steps=4), num_images=2, seed=2, prompt="a cat").images.mean().item()
    guided = sample(flux, bright(0.9), SamplerConfig(**cfg), num_images=2, seed=2, prompt="a cat").images.mean().item()
    assert guided > free + 0.1, (free, guided)


def test_forward_guidance_reaches_z_at_sigma_one(flux):
    """At sigma = 1 (a_t = 0) x0_hat comes from the backbone's own pass and is differentiable in z_t."""
    cond = flux.condition("a cat", None, 1, 1.0)
    z = torch.randn(1, *flux.sample_shape, requires_grad=True)
    t = torch.full((1,), 1000.0)
    flux.eps(z, t, cond)
    (g,) = torch.autograd.grad(flux.x0_at_pure_noise(z, t, cond).square().sum(), z)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_bf16_and_memory_knobs():
    bb = StableDiffusion3Backbone.from_pipeline(tiny_sd3_pipeline(), max_sequence_length=SEQ)
    ref = sample(bb, bright(), SamplerConfig(num_steps=2, forward_strength=1.0, backward_steps=1), num_images=1, seed=0, prompt="a")
    ckpt = sample(bb, bright(), SamplerConfig(num_steps=2, forward_strength=1.0, backward_steps=1, grad_checkpointing=True),
                  num_images=1, seed=0, prompt="a")
    assert bb.transformer.is_gradient_checkpointing
    torch.testing.assert_close(ckpt.latents, ref.latents, atol=1e-5, rtol=1e-5)
    half = sample(bb, bright(), SamplerConfig(num_steps=2, forward_strength=1.0, backward_steps=1, dtype="bf16"), num_images=1, seed=0, prompt="a")
    assert bb.transformer.dtype == torch.bfloat16 and half.latents.dtype == torch.float32
    assert torch.isfinite(half.images).all()


def test_text_encoders_wait_on_the_cpu_when_offloaded():
    bb = FluxBackbone.from_pipeline(tiny_flux_pipeline(), height=16, width=16, max_sequence_length=SEQ, offload_text=True)
    bb.condition("a cat", None, 1, 1.0)
    assert next(bb.pipe.text_encoder.parameters()).device.type == "cpu"


def test_bad_inputs_say_what_and_how(tmp_path):
    with pytest.raises(UgdError, match="height=18 is not a multiple of 4"):
        FluxBackbone.from_pipeline(tiny_flux_pipeline(), height=18, width=16)
    with pytest.raises(UgdError, match="model="):
        FluxBackbone.from_pretrained(str(tmp_path / "nowhere"))
    sd3 = save_tiny_flow_pipeline(tmp_path / "sd3", kind="sd3-no-t5")
    with pytest.raises(UgdError, match="Flux"):
        FluxBackbone.from_pretrained(str(sd3))
    bb = StableDiffusion3Backbone.from_pretrained(str(sd3), max_sequence_length=SEQ)
    assert bb.pipe.text_encoder_3 is None
    with pytest.raises(UgdError, match="scheduler=ddim"):
        sample(bb, None, SamplerConfig(num_steps=2, scheduler="euler"), num_images=1, seed=0, prompt="a")


def test_a_forward_step_on_z_t_at_sigma_one_is_skipped_and_counted(flux):
    """TFG's step on z_t carries 1/sqrt(alpha_t), infinite at a_t = 0: the guard skips it there, never a crash."""
    cfg = SamplerConfig(num_steps=3, forward_strength=0.5, forward_on="z_t", forward_schedule="constant")
    with pytest.warns(Warning):
        out = sample(flux, bright(), cfg, num_images=1, seed=0, prompt="a cat")
    assert torch.isfinite(out.images).all() and out.stats.guidance.nonfinite_skipped == 1


def test_flux_refuses_a_negative_prompt_in_one_line(flux):
    """docs/backbones/flux.md: FLUX.1 runs no CFG batch, so a negative prompt would be ignored while the run's record
    named it: one line instead, before sampling."""
    with pytest.raises(UgdError, match="flux takes no negative prompt.*drop --negative-prompt") as err:
        sample(flux, [], SamplerConfig(num_steps=2), num_images=1, prompt="a cat", negative_prompt="blurry")
    assert "\n" not in str(err.value)
