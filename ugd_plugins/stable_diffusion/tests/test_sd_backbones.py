"""Stable Diffusion 1.x / 2.x / XL backbones on tiny random configs of the real classes: the pipelines
users hold, half precision, memory knobs, conditioning and eps against diffusers' own code."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core.errors import UgdError
from ugd_core.registry import load_registry
from ugd_core.sampler import ddim_step
import ugd_sd.plugin
from ugd_sd import StableDiffusionBackbone, StableDiffusionXLBackbone
from ugd_sd.testing import save_tiny_stable_diffusion, tiny_stable_diffusion, tiny_stable_diffusion_pipeline

def registry():
    """ugd's built-ins and this plugin, as the entry point would load it."""
    return load_registry([("stable-diffusion", ugd_sd.plugin)], entry_points=False)


FULL = dict(num_steps=2, forward_strength=1.0, backward_steps=2, backward_lr=0.1, recurrence=2)


def bright(level: float = 0.3):
    return make_guide("bright", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=level)


def run(backbone, guide=None, seed=0, n=1, **knobs):
    return sample(backbone, guide, SamplerConfig(**{**FULL, **knobs}), num_images=n, seed=seed, prompt="a cat")


@pytest.mark.parametrize("kind", ["sd", "sd2", "sdxl"])
def test_a_bf16_pipeline_samples_with_forward_backward_recurrence(kind):
    pipe = tiny_stable_diffusion_pipeline(kind=kind).to(torch.bfloat16)  # as loaded with torch_dtype=torch.bfloat16
    bb = StableDiffusionBackbone.from_pipeline(pipe)
    assert isinstance(bb, StableDiffusionXLBackbone) == (kind == "sdxl")
    out = run(bb, bright())
    assert out.images.dtype == torch.float32 and out.latents.dtype == torch.float32
    assert torch.isfinite(out.images).all() and out.images.abs().max() <= 1
    assert out.stats.denoiser_backward == 2 * 2 and out.stats.guidance.nonfinite_skipped == 0
    assert bb.unet.dtype == torch.bfloat16  # dtype auto keeps the pipeline's own precision


def test_dtype_knob_casts_the_modules_and_stays_close_to_fp32():
    ref = run(tiny_stable_diffusion(), bright())
    bb = tiny_stable_diffusion()
    half = run(bb, bright(), dtype="bf16")
    assert bb.unet.dtype == bb.text_encoder.dtype == bb.vae.dtype == torch.bfloat16
    assert torch.isfinite(half.images).all()
    assert (half.images - ref.images).abs().mean() < 0.02  # bf16 rounding on a 2-step chain of the tiny model


def test_eps_is_float32_and_differentiable_in_float32_z():
    bb = tiny_stable_diffusion()
    bb.configure(SamplerConfig(dtype="bf16"))
    cond = bb.condition("a cat", None, 2, 7.5)
    assert cond.embeds.dtype == torch.bfloat16
    z = torch.randn(2, *bb.sample_shape, requires_grad=True)
    eps = bb.eps(z, torch.full((2,), 500), cond)
    assert eps.dtype == torch.float32
    (g,) = torch.autograd.grad(bb.decode(eps).square().sum(), z)
    assert g.dtype == torch.float32 and torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("kind", ["sd", "sd2"])
def test_one_unguided_step_equals_diffusers_ddim(kind):
    """ugd's eps (CFG on the raw output, then to eps) and DDIM step equal DDIMScheduler.step on the
    pipeline's CFG output (epsilon and v-prediction) to 1e-5."""
    pipe = tiny_stable_diffusion_pipeline(kind=kind)
    bb = StableDiffusionBackbone.from_pipeline(pipe)
    sched = bb.scheduler
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    z = torch.randn(2, *bb.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb, neg = pipe.encode_prompt("a cat", "cpu", 2, True, negative_prompt=None)[:2]
        out = pipe.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([neg, emb])).sample
        u, c = out.chunk(2)
        want = sched.step(u + 7.5 * (c - u), t, z).prev_sample
        eps = bb.eps(z, torch.full((2,), int(t)), bb.condition("a cat", None, 2, 7.5))
    a_t = float(sched.alphas_cumprod[t])
    a_prev = float(sched.alphas_cumprod[t - 1000 // 10])
    torch.testing.assert_close(ddim_step(z, eps, a_t, a_prev, 0.0, None), want, atol=1e-5, rtol=1e-5)


def test_sdxl_conditioning_equals_diffusers_encode_prompt_and_time_ids():
    pipe = tiny_stable_diffusion_pipeline(kind="sdxl")
    bb = StableDiffusionBackbone.from_pipeline(pipe)
    for negative in (None, "blurry"):  # None: SDXL's zeroed negative embeddings (force_zeros_for_empty_prompt)
        cond = bb.condition("a cat", negative, 2, 7.5)
        with torch.no_grad():
            emb, neg, pooled, neg_pooled = pipe.encode_prompt("a cat", device="cpu", num_images_per_prompt=2, negative_prompt=negative)
        torch.testing.assert_close(cond.embeds, torch.cat([neg, emb]), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(cond.added["text_embeds"], torch.cat([neg_pooled, pooled]), atol=1e-6, rtol=1e-6)
    # size conditioning (original size, crop top-left, target size), as the pipeline builds it
    ids = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), torch.float32, text_encoder_projection_dim=32)
    torch.testing.assert_close(cond.added["time_ids"], ids.repeat(4, 1))


def test_sdxl_height_width_drive_latents_and_time_ids():
    bb = StableDiffusionBackbone.from_pipeline(tiny_stable_diffusion_pipeline(kind="sdxl"), height=24, width=32)
    assert bb.sample_shape == (4, 12, 16)
    cond = bb.condition("a cat", None, 1, 1.0)
    assert cond.scale is None and cond.added["time_ids"].tolist() == [[24.0, 32.0, 0.0, 0.0, 24.0, 32.0]]
    out = sample(bb, bright(), SamplerConfig(num_steps=2, forward_strength=1.0, cfg_scale=1.0), num_images=1, seed=0, prompt="a cat")
    assert out.images.shape == (1, 3, 24, 32) and torch.isfinite(out.images).all()


def test_memory_knobs_change_memory_not_results():
    base = run(tiny_stable_diffusion(), bright())
    bb = tiny_stable_diffusion()
    knobs = dict(grad_checkpointing=True, vae_slicing=True, vae_tiling=True, attention_slicing=True)
    low = run(bb, bright(), **knobs)
    assert bb.unet.is_gradient_checkpointing and bb.vae.is_gradient_checkpointing
    assert bb.vae.use_slicing and bb.vae.use_tiling
    assert {type(p).__name__ for p in bb.unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    torch.testing.assert_close(low.images, base.images, atol=1e-5, rtol=1e-5)
    run(bb, bright())  # knobs off again: diffusers' defaults come back
    assert not bb.unet.is_gradient_checkpointing and not bb.vae.use_slicing
    assert {type(p).__name__ for p in bb.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_fp16_overflow_ends_in_the_nonfinite_guard_never_a_nan_image():
    """A guide gradient beyond fp16's range (65504) overflows in the fp16 VAE/UNet backward pass: the
    sampler's guard skips that guidance, so the result equals the unguided fp16 sample."""
    huge = make_guide("huge", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: 1e12 * (m - c) ** 2, target=5.0)
    bb = tiny_stable_diffusion()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = run(bb, huge, dtype="fp16")
    assert out.stats.guidance.nonfinite_skipped > 0
    assert torch.isfinite(out.images).all() and torch.isfinite(out.latents).all()
    plain = run(bb, None, dtype="fp16")
    torch.testing.assert_close(out.images, plain.images, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind, cls, prediction", [("sd", StableDiffusionBackbone, "epsilon"), ("sd2", StableDiffusionBackbone, "v_prediction"),
                                                   ("sdxl", StableDiffusionXLBackbone, "epsilon")])
def test_saved_pipeline_folders_load_through_the_registry(tmp_path, kind, cls, prediction):
    folder = save_tiny_stable_diffusion(tmp_path / kind, kind=kind)
    bb = registry().build("backbone", "stable-diffusion", {"model": str(folder)})
    assert type(bb) is cls and bb.prediction_type == prediction
    mem = tiny_stable_diffusion(kind=kind)
    z, t = torch.randn(1, *bb.sample_shape), torch.full((1,), 400)
    with torch.no_grad():
        torch.testing.assert_close(bb.eps(z, t, bb.condition("a", None, 1, 7.5)), mem.eps(z, t, mem.condition("a", None, 1, 7.5)), atol=1e-6, rtol=1e-6)


def test_from_pretrained_loads_in_the_asked_dtype_and_checks_the_kind(tmp_path):
    sd = save_tiny_stable_diffusion(tmp_path / "sd")
    xl = save_tiny_stable_diffusion(tmp_path / "xl", kind="sdxl")
    assert StableDiffusionBackbone.from_pretrained(str(sd), dtype="bf16").unet.dtype == torch.bfloat16
    assert isinstance(StableDiffusionXLBackbone.from_pretrained(str(xl)), StableDiffusionXLBackbone)
    with pytest.raises(UgdError, match="not SDXL"):
        StableDiffusionXLBackbone.from_pretrained(str(sd))
    with pytest.raises(UgdError, match="dtype='half'"):
        StableDiffusionBackbone.from_pretrained(str(sd), dtype="half")


def test_missing_weights_are_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("stable-diffusion", "stable-diffusion-xl"):
        with pytest.raises(UgdError) as err:
            registry().build("backbone", name, {"model": "nobody/no-such-model"})
        msg = str(err.value)
        assert "nobody/no-such-model" in msg and "not found" in msg and "model=" in msg and "\n" not in msg


def test_registered_defaults_and_low_memory_preset():
    reg = registry()
    defaults = {e.name: {p.name: p.default for p in e.params} for e in (reg.get("backbone", "stable-diffusion"), reg.get("backbone", "stable-diffusion-xl"))}
    assert defaults["stable-diffusion"]["model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert defaults["stable-diffusion-xl"]["model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    low = reg.get("preset", "low-memory").settings
    auto = reg.get("preset", "auto").settings
    assert {k: low[k] for k in auto} == auto and low["grad_checkpointing"] and low["vae_slicing"]
    SamplerConfig(**low)  # a valid knob set


def test_a_size_the_vae_cannot_make_is_one_line():
    with pytest.raises(UgdError, match=r"height=21 is not a multiple of 2 .*; use 20 or 22"):
        StableDiffusionBackbone.from_pipeline(tiny_stable_diffusion_pipeline(), height=21)
