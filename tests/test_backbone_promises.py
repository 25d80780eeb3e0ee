"""What a backbone adapter and a guide promise at their boundaries: model outputs become ε as diffusers' own
schedulers define them, the pixel and callable adapters keep the schedule, shape and conditioning they are given,
Stable Diffusion's conditioning and decode follow diffusers' pipelines, guides see images in their network's dtype
and score one value per sample, per-sample noise is drawn as documented, and lazy package exports behave like
attributes.

Everything runs on tiny random-weight configs of the real diffusers classes (no download).
"""

from __future__ import annotations

import logging
import sys
import warnings

import pytest
import torch
from torch import nn

from ugd_core import CallableBackbone, SamplerConfig, make_guide, sample
from ugd_core.backbones import (
    DiffusersPixelBackbone,
    at_least_fp32,
    cast_module,
    default_scheduler,
    loading_weights,
    missing_weights_message,
    refuse_prompt,
    set_channels_last,
    to_epsilon,
)
from ugd_core.errors import UgdError, UgdWarning
from ugd_core.guidance import GuideSet, as_guide_set, guide_loss
from ugd_core.noise import make_generators, randn


def _unet(**extra):
    """A tiny diffusers UNet2DModel (pixel space), seeded."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    kw = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
              down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)
    return UNet2DModel(**{**kw, **extra})


def _pixel(unet=None, scheduler=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UgdWarning)
        return DiffusersPixelBackbone(unet if unet is not None else _unet(), scheduler)


# ------------------------------------------------------------------------------------------ to_epsilon


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_to_epsilon_inverts_diffusers_own_noising_and_velocity(prediction):
    """ugd_core/backbones.py to_epsilon: v- and x0-predictions become the ε that diffusers' DDPMScheduler used to make
    z_t (add_noise) and v (get_velocity); closed-form reference, not a restated formula."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([10, 500, 990])
    z = sched.add_noise(x0, eps, t)
    out = sched.get_velocity(x0, eps, t) if prediction == "v_prediction" else x0
    got = to_epsilon(out, z, sched.alphas_cumprod[t], prediction)
    torch.testing.assert_close(got, eps, atol=1e-4, rtol=1e-4)


def test_to_epsilon_refuses_what_it_cannot_convert():
    """to_epsilon's docstring: alpha_bar may be None only for epsilon-prediction; an unknown prediction_type is an error."""
    z = torch.randn(1, 1, 2, 2)
    assert to_epsilon(z * 2, z, None, "epsilon").equal(z * 2)
    with pytest.raises(ValueError, match="needs alpha_bar for prediction_type 'v_prediction'"):
        to_epsilon(z, z, None, "v_prediction")
    with pytest.raises(UgdError, match="unsupported prediction_type 'flow'; use epsilon, v_prediction or sample"):
        to_epsilon(z, z, torch.tensor([0.5]), "flow")


def test_learned_variance_output_keeps_its_first_half():
    """docs/backbones/diffusers-pixel.md: learned-variance outputs (twice the image channels) keep their first half."""
    bb = _pixel(_unet(out_channels=2), default_scheduler())
    z, t = torch.randn(2, 1, 8, 8), torch.tensor([100, 700])
    with torch.no_grad():
        raw = bb.unet(z, t).sample
        eps = bb.eps(z, t, None)
    assert raw.shape[1] == 2 and eps.shape == z.shape
    torch.testing.assert_close(eps, raw[:, :1])


def test_eps_and_decoded_images_are_float32_or_wider():
    """BackboneBase's precision rule: eps is returned in float32 (or wider), so a float64 model keeps float64."""
    assert at_least_fp32(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64
    assert at_least_fp32(torch.zeros(1, dtype=torch.bfloat16)).dtype == torch.float32
    bb = CallableBackbone(lambda z, t, c: 0.5 * z, (1, 2, 2), prediction_type="v_prediction")
    z = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    assert bb.eps(z, torch.tensor([3, 900]), None).dtype == torch.float64


# ------------------------------------------------------------------------------------------ schedules


def test_the_assumed_schedule_is_ddpms_linear_one_over_the_unets_steps():
    """docs/backbones/diffusers-pixel.md: without a scheduler, DDPM's linear schedule over the UNet's
    num_train_timesteps; checked against diffusers' DDPMScheduler itself."""
    from diffusers import DDPMScheduler

    with pytest.warns(UgdWarning, match=r"assuming a linear DDPM schedule \(500 steps"):
        bb = DiffusersPixelBackbone(_unet(num_train_timesteps=500))
    torch.testing.assert_close(bb.scheduler.alphas_cumprod, DDPMScheduler(num_train_timesteps=500).alphas_cumprod)
    torch.testing.assert_close(default_scheduler(200).alphas_cumprod, DDPMScheduler(num_train_timesteps=200).alphas_cumprod)


def test_the_default_schedule_does_not_clip_x0_in_a_diffusers_solver():
    """SamplerConfig clip_x0 defaults to off: a CallableBackbone on its default scheduler sampled through diffusers'
    DDIMScheduler equals ugd's exact DDIM (docs/algorithm.md, "Any diffusers scheduler"), also for data far outside [-1, 1]."""
    def model(z, t, cond=None):  # exact eps of x0 = 3 everywhere
        a = default_scheduler().alphas_cumprod[t.long()].view(-1, 1, 1, 1)
        return (z - a.sqrt() * 3.0) / (1 - a).sqrt()

    bb = CallableBackbone(model, (1, 2, 2))
    z = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    ours = sample(bb, None, SamplerConfig(num_steps=5), num_images=2, seed=0, latents=z).latents
    theirs = sample(bb, None, SamplerConfig(num_steps=5, scheduler="DDIMScheduler"), num_images=2, seed=0, latents=z).latents
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert ours.mean() > 2.5


def test_a_replaced_scheduler_is_the_one_eps_reads():
    """BackboneBase._alpha_bar caches a_t per device, keyed by the scheduler's alphas_cumprod: after the scheduler is
    replaced, v-prediction is converted with the new schedule (to_epsilon's formula at the new a_t)."""
    from diffusers import DDIMScheduler

    bb = CallableBackbone(lambda z, t, c: torch.zeros_like(z), (1, 2, 2), DDIMScheduler(), prediction_type="v_prediction")
    z, t = torch.ones(1, 1, 2, 2), torch.tensor([600])
    bb.eps(z, t, None)
    bb.scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2")
    want = (1 - bb.scheduler.alphas_cumprod[600]).sqrt()  # eps = sqrt(a) v + sqrt(1 - a) z with v = 0, z = 1
    torch.testing.assert_close(bb.eps(z, t, None), want.expand(1, 1, 2, 2))


# ------------------------------------------------------------------------------------------ adapters


def test_callable_backbone_hands_the_prompt_to_its_function():
    """CallableBackbone: any callable fn(z_t, t, cond); its conditioning is the prompt it was given."""
    seen = []
    bb = CallableBackbone(lambda z, t, c: seen.append(c) or torch.zeros_like(z), (1, 2, 2))
    sample(bb, None, SamplerConfig(num_steps=2), num_images=1, seed=0, prompt="a cat")
    assert seen and all(c == "a cat" for c in seen)


def test_a_non_square_pixel_unet_keeps_its_height_and_width():
    """Backbone.sample_shape is (C, H, W); a UNet2DModel's sample_size (H, W) gives H rows and W columns."""
    bb = _pixel(_unet(sample_size=(8, 16)), default_scheduler())
    assert bb.sample_shape == (1, 8, 16)
    out = sample(bb, None, SamplerConfig(num_steps=1), num_images=1, seed=0)
    assert out.images.shape == (1, 1, 8, 16)


def test_one_class_index_conditions_every_image():
    """docs/backbones/diffusers-pixel.md: class-conditional when the UNet has num_class_embeds, the class index is the
    prompt: one index labels every image of the batch."""
    bb = _pixel(_unet(num_class_embeds=10), default_scheduler())
    cond = bb.condition(3, None, 4, 1.0)
    assert cond.tolist() == [3, 3, 3, 3]
    assert bb.condition([1, 2], None, 2, 1.0).tolist() == [1, 2]
    z, t = torch.randn(4, 1, 8, 8), torch.full((4,), 300)
    with torch.no_grad():
        torch.testing.assert_close(bb.eps(z, t, cond), bb.unet(z, t, class_labels=torch.full((4,), 3)).sample)


def test_backbone_networks_are_frozen():
    """ugd_core/backbones.py: backbones are frozen diffusion models (eval mode, no parameter gradients)."""
    unet = _unet()
    unet.train()
    bb = _pixel(unet, default_scheduler())
    assert not bb.unet.training and not any(p.requires_grad for p in bb.unet.parameters())


def test_a_negative_prompt_alone_is_refused_by_an_unconditional_backbone():
    """docs/plugins.md: an unconditional backbone refuses a prompt or negative prompt it would ignore, in one line."""
    for prompt, negative in (("a cat", None), (None, "blurry"), ("", "blurry")):
        with pytest.raises(UgdError, match="is unconditional: it takes no prompt or negative prompt") as err:
            refuse_prompt("digits", prompt, negative)
        assert "\n" not in str(err.value)
    refuse_prompt("digits", None, "")
    with pytest.raises(UgdError, match="unconditional"):
        _pixel(scheduler=default_scheduler()).condition(None, "blurry", 1, 1.0)


# ------------------------------------------------------------------------------------------ knobs


def test_channels_last_set_under_inference_mode_still_takes_gradients():
    """set_channels_last: weights re-laid out under a caller's inference_mode can still join autograd later."""
    conv = nn.Conv2d(2, 3, 3)
    with torch.inference_mode():
        set_channels_last(True, conv)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    (g,) = torch.autograd.grad(conv(x).sum(), x)
    assert torch.isfinite(g).all()


def test_channels_last_off_puts_the_weights_back_in_nchw():
    """set_channels_last(False, ...): the 4-D weights go back to contiguous NCHW (docs/algorithm.md, channels_last knob)."""
    conv = nn.Conv2d(2, 3, 3)
    set_channels_last(True, conv)
    assert not conv.weight.is_contiguous()
    set_channels_last(False, conv)
    assert conv.weight.is_contiguous()


def test_a_quantized_module_is_not_cast():
    """cast_module's docstring: quantized models cannot be cast (one UgdError pointing to --dtype auto); a cast to the
    dtype they already have is no cast."""
    m = nn.Linear(2, 2)
    m.is_quantized = True
    with pytest.raises(UgdError, match=r"quantized and cannot be cast to torch.float16; use --dtype auto"):
        cast_module(m, torch.float16)
    cast_module(m, torch.float32)
    assert m.weight.dtype == torch.float32


def test_cast_module_leaves_diffusers_logging_as_it_was():
    """cast_module silences diffusers' _keep_in_fp32_modules warning for the cast only: the logger's level is restored."""
    log = logging.getLogger("diffusers.models.modeling_utils")
    before = log.level
    try:
        log.setLevel(logging.INFO)
        cast_module(nn.Linear(2, 2), torch.float64)
        assert log.level == logging.INFO
    finally:
        log.setLevel(before)


# ------------------------------------------------------------------------------------------ loading messages


def test_loading_failures_name_what_was_found(tmp_path, monkeypatch):
    """loading_weights: a folder without a pipeline says what it holds and should contain; a single file says it is a
    file; a missing model names the cache, the hf download command, the option and (offline) that it was offline."""
    (tmp_path / "junk.txt").write_text("x")
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")

    def fail(model):
        with pytest.raises(UgdError) as err:
            with loading_weights(model, "a UNet folder"):
                raise OSError("no file named config.json")
        assert "\n" not in str(err.value)
        return str(err.value)

    msg = fail(str(tmp_path))
    assert "is a folder but holds no loadable pipeline (it holds junk.txt, model.safetensors: no file named config.json)" in msg
    assert msg.endswith("it should contain a UNet folder")
    assert "is a file, not a pipeline folder; give a folder holding a UNet folder" in fail(str(ckpt))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = fail("nobody/no-model")
    assert "weights for 'nobody/no-model' not found (offline and looked in the Hugging Face cache (" in msg
    assert "`hf download nobody/no-model`" in msg and msg.endswith("model=/path/to/folder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert "(looked in /w" in missing_weights_message("m", "/w", "weights=/path")
    with pytest.raises(UgdError, match="^a plugin's own message$"):  # a UgdError raised inside passes through as it is
        with loading_weights(str(tmp_path)):
            raise UgdError("a plugin's own message")


# ------------------------------------------------------------------------------------------ guides


def test_a_timestep_aware_guide_gets_t_and_zero_outside_the_sampler():
    """make_guide: timestep_aware=True calls f(x, t) with the LongTensor [N] of timesteps; outside the sampler t = 0."""
    seen = []
    g = make_guide("ta", f=lambda x, t: seen.append(t) or x.mean((1, 2, 3)), loss=lambda o, c: o, timestep_aware=True)
    images = torch.zeros(3, 1, 2, 2)
    guide_loss(g, images, torch.tensor([5, 6, 7]))
    guide_loss(g, images)
    assert seen[0].tolist() == [5, 6, 7]
    assert seen[1].dtype == torch.long and seen[1].tolist() == [0, 0, 0]


def test_a_guide_sees_images_in_its_networks_dtype():
    """guide_loss: images are cast to the dtype of the guide's network (f when it is an nn.Module, else its first
    module); a network without floating-point parameters leaves them as they are (docs/plugins.md, preprocess)."""
    seen = []

    class Net(nn.Module):
        def __init__(self, param):
            super().__init__()
            self.p = param

        def forward(self, x):
            seen.append(x.dtype)
            return x.float().mean((1, 2, 3))

    images = torch.zeros(2, 1, 2, 2, dtype=torch.float16)
    as_f = make_guide("f", f=Net(nn.Parameter(torch.zeros(1, dtype=torch.float64))), loss=lambda o, c: o)
    as_module = make_guide("m", f=lambda x: x.float().mean((1, 2, 3)), loss=lambda o, c: o, preprocess=lambda x: seen.append(x.dtype) or x,
                           modules=[nn.Linear(1, 1)])
    integer = make_guide("i", f=Net(nn.Parameter(torch.zeros(1, dtype=torch.long), requires_grad=False)), loss=lambda o, c: o)
    for g in (as_f, as_module, integer):
        guide_loss(g, images)
    assert seen == [torch.float64, torch.float32, torch.float16]


def test_guide_loss_keeps_float64_and_checks_one_value_per_sample():
    """guide_loss: float32, or float64 where the images are; a loss that is not one value per sample is an error."""
    g = make_guide("m", f=lambda x: x.mean((1, 2, 3)), loss=lambda o, c: o)
    assert guide_loss(g, torch.zeros(2, 1, 2, 2, dtype=torch.float64)).dtype == torch.float64
    assert guide_loss(g, torch.zeros(2, 1, 2, 2, dtype=torch.float16)).dtype == torch.float32
    bad = make_guide("bad", f=lambda x: x.mean((1, 2, 3)), loss=lambda o, c: o[:, None])
    with pytest.raises(ValueError, match=r"guide 'bad' returned a loss of shape \(2, 1\); .*shape \[2\]"):
        guide_loss(bad, torch.zeros(2, 1, 2, 2))


def test_guide_sets_weigh_sum_and_refuse_as_documented():
    """GuideSet: a weighted sum of per-sample losses; losses() are unweighted; differentiable only when every guide is;
    a non-guide or a non-finite weight is one UgdError; as_guide_set reads (guide, weight) as one weighted guide."""
    a = make_guide("a", f=lambda x: x.mean((1, 2, 3)), loss=lambda o, c: o + 1)
    b = make_guide("b", f=lambda x: x.mean((1, 2, 3)), loss=lambda o, c: o + 10, differentiable=False)
    images = torch.zeros(2, 1, 2, 2)
    gs = GuideSet([(a, 2.0), b])
    assert gs.loss(images).tolist() == [12.0, 12.0]
    assert {k: v.tolist() for k, v in gs.losses(images).items()} == {"a": [1.0, 1.0], "b": [10.0, 10.0]}
    assert not gs.differentiable and GuideSet([a]).differentiable
    pair = as_guide_set((a, 3))
    assert len(pair) == 1 and pair.items[0].guide is a and pair.items[0].weight == 3.0
    with pytest.raises(UgdError, match="is not a guide: it needs name, differentiable"):
        GuideSet([object()])
    with pytest.raises(UgdError, match="guide 'a': weight nan is not a finite number"):
        GuideSet([(a, float("nan"))])


def test_make_guide_freezes_its_modules_and_to_moves_the_target():
    """make_guide: modules are frozen (eval mode, no parameter gradients); Guide.to moves networks and a tensor target."""
    net = nn.Linear(2, 2).train()
    g = make_guide("g", f=net, loss=lambda o, c: o.sum(1), target=torch.zeros(2), modules=[net])
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    g.to("meta")
    assert g.target.device.type == "meta" and net.weight.device.type == "meta"


# ------------------------------------------------------------------------------------------ noise


def test_seeds_two_to_the_32_apart_draw_different_noise():
    """noise.make_generators: any two seeds draw different noise (torch reads only 32 bits, so 2^32 is mixed down)."""
    g0, g32 = make_generators([0, 2**32])
    assert not torch.equal(torch.randn(8, generator=g0), torch.randn(8, generator=g32))


def test_a_shared_generator_draws_the_batch_at_once_as_diffusers_does():
    """noise.randn: when every sample shares one generator (diffusers-style), the batch is drawn at once: the same
    numbers as torch.randn of the whole batch from that generator; separate generators give sample i generator i's."""
    shape = (3, 5, 5)  # 75 values a sample: torch's vectorised normal fill differs between one draw and three
    shared = torch.Generator().manual_seed(4)
    got = randn(shape, [shared] * 3, torch.device("cpu"))
    torch.testing.assert_close(got, torch.randn((3, *shape), generator=torch.Generator().manual_seed(4)), atol=0, rtol=0)
    per = randn(shape, make_generators([1, 2]), torch.device("cpu"))
    torch.testing.assert_close(per[1], torch.randn(shape, generator=torch.Generator().manual_seed(2)), atol=0, rtol=0)


# ------------------------------------------------------------------------------------------ lazy exports


def test_lazy_exports_behave_like_attributes(tmp_path, monkeypatch):
    """ugd_core/lazy.py: a lazy name is imported on first access and cached in the package, listed by dir(), and an
    unknown name is an AttributeError (so hasattr is False)."""
    pkg = tmp_path / "lazypkg_h4"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from ugd_core.lazy import lazy_exports\n__getattr__, __dir__ = lazy_exports(__name__, {'VALUE': 'sub'})\n")
    (pkg / "sub.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazypkg_h4

    try:
        assert "VALUE" in dir(lazypkg_h4) and "VALUE" not in vars(lazypkg_h4)
        assert lazypkg_h4.VALUE == 42 and vars(lazypkg_h4)["VALUE"] == 42
        assert not hasattr(lazypkg_h4, "NOPE")
    finally:
        for name in ("lazypkg_h4", "lazypkg_h4.sub"):
            sys.modules.pop(name, None)


# ------------------------------------------------------------------------------------------ Stable Diffusion


def _sd_pipe(kind="sd"):
    from ugd_sd.testing import tiny_stable_diffusion_pipeline

    return tiny_stable_diffusion_pipeline(kind=kind)


def _sd(pipe, **kw):
    from ugd_sd import StableDiffusionBackbone

    return StableDiffusionBackbone.from_pipeline(pipe, **kw)


def test_sd_negative_prompt_is_the_unconditional_half():
    """docs/backbones/stable-diffusion.md / TextCondition: with CFG the unconditional rows come first, encoded from the
    negative prompt as StableDiffusionPipeline.encode_prompt encodes it."""
    pipe = _sd_pipe()
    cond = _sd(pipe).condition("a cat", "blurry", 2, 7.5)
    with torch.no_grad():
        emb, neg = pipe.encode_prompt("a cat", "cpu", 2, True, negative_prompt="blurry")[:2]
    torch.testing.assert_close(cond.embeds, torch.cat([neg, emb]), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("force_zeros", [True, False])
def test_sdxl_empty_negative_prompt_follows_the_pipelines_config(force_zeros):
    """docs/backbones/stable-diffusion.md: with no negative prompt SDXL's unconditional embeddings are zeros when the
    pipeline's force_zeros_for_empty_prompt says so; an empty-string negative prompt is encoded, as in diffusers'
    StableDiffusionXLPipeline.encode_prompt."""
    pipe = _sd_pipe("sdxl")
    pipe.register_to_config(force_zeros_for_empty_prompt=force_zeros)
    bb = _sd(pipe)
    for negative in (None, ""):
        cond = bb.condition("a cat", negative, 1, 7.5)
        with torch.no_grad():
            emb, neg, pooled, neg_pooled = pipe.encode_prompt("a cat", device="cpu", num_images_per_prompt=1, negative_prompt=negative)
        torch.testing.assert_close(cond.embeds, torch.cat([neg, emb]), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(cond.added["text_embeds"], torch.cat([neg_pooled, pooled]), atol=1e-6, rtol=1e-6)


def test_sd_decode_undoes_the_vae_scaling_and_shift():
    """decode is the VAE decoder of latents / scaling_factor + shift_factor, as diffusers' pipelines decode."""
    from ugd_sd.testing import _tiny_vae

    pipe = _sd_pipe()
    bb = _sd(pipe)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bb.decode(z), pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample)
        torch.manual_seed(0)
        pipe.vae = _tiny_vae(scaling_factor=0.5, shift_factor=0.25)
        bb = _sd(pipe)
        torch.testing.assert_close(bb.decode(z), pipe.vae.decode(z / 0.5 + 0.25).sample)


def test_sd_height_alone_keeps_the_models_width():
    """docs/backbones/stable-diffusion.md: height, width in pixels, 0 = the model's own size, each on its own."""
    assert _sd(_sd_pipe(), height=24).sample_shape == (4, 12, 8)
    assert _sd(_sd_pipe(), width=24).sample_shape == (4, 8, 12)


def test_sd_batch_and_prompt_count_mismatches_are_errors():
    """A prompt list must give one prompt per image (one UgdError line); eps refuses conditioning of another batch."""
    bb = _sd(_sd_pipe())
    with pytest.raises(UgdError, match="3 prompts given for 2 images; give one prompt or one per image"):
        bb.condition(["a", "b", "c"], None, 2, 7.5)
    cond = bb.condition("a cat", None, 2, 7.5)
    with pytest.raises(ValueError, match="conditioning batch does not match z_t"):
        bb.eps(torch.randn(1, *bb.sample_shape), torch.full((1,), 500), cond)


def test_attention_slicing_off_restores_the_models_processors_on_its_own():
    """docs/backbones/stable-diffusion.md, memory knobs: attention_slicing off restores the model's own processors, also
    when no other knob changes with it."""
    bb = _sd(_sd_pipe())
    bb.configure(SamplerConfig(attention_slicing=True))
    assert {type(p).__name__ for p in bb.unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    bb.configure(SamplerConfig())
    assert {type(p).__name__ for p in bb.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_sd_networks_are_frozen():
    """ugd_sd: a frozen UNet, VAE and text encoder (eval mode, no parameter gradients), whatever the pipeline held."""
    pipe = _sd_pipe()
    pipe.unet.train().requires_grad_(True)
    bb = _sd(pipe)
    for m in (bb.unet, bb.vae, bb.text_encoder):
        assert not m.training and not any(p.requires_grad for p in m.parameters())


def test_sd_conditioning_is_cast_to_the_unets_dtype():
    """docs/backbones/stable-diffusion.md, precision: eps() casts z_t and the conditioning to the UNet's dtype (a bf16
    UNet beside an fp32 text encoder) and returns eps in float32."""
    pipe = _sd_pipe()
    pipe.unet.to(torch.bfloat16)
    bb = _sd(pipe)
    cond = bb.condition("a cat", None, 1, 7.5)
    assert bb.text_encoder.dtype == torch.float32 and cond.embeds.dtype == torch.bfloat16
    with torch.no_grad():
        eps = bb.eps(torch.randn(1, *bb.sample_shape), torch.full((1,), 500), cond)
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


# ---------------------------------------------------------------------- two bugs the audit found, fixed


def test_sd_default_size_of_a_non_square_unet_is_the_pipelines():
    """docs/backbones/stable-diffusion.md: height/width 0 = the model's own size. diffusers' StableDiffusionPipeline
    takes a tuple UNet sample_size as (height, width) (pipeline_stable_diffusion.py, "Default height and width to
    unet"); ugd's latents must have the shape the pipeline's own latents have."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from ugd_sd import StableDiffusionBackbone
    from ugd_sd.testing import tiny_stable_diffusion_pipeline

    tiny = tiny_stable_diffusion_pipeline()
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**tiny.unet.config, "sample_size": (8, 12)})
    pipe = StableDiffusionPipeline(**{**tiny.components, "unet": unet})
    with torch.no_grad():
        theirs = pipe("a cat", num_inference_steps=1, output_type="latent").images
    assert tuple(theirs.shape[1:]) == (4, 8, 12)
    assert StableDiffusionBackbone.from_pipeline(pipe).sample_shape == tuple(theirs.shape[1:])


def test_a_class_index_given_on_the_command_line_conditions_a_diffusers_pixel_unet(tmp_path):
    """docs/backbones/diffusers-pixel.md: class-conditional when the UNet has num_class_embeds, "the class index is the
    prompt"; the CLI hands the prompt over as text (--prompt 3), as it does to adm (docs/backbones/adm.md, --prompt 207)."""
    from diffusers import DDIMScheduler, UNet2DModel
    from typer.testing import CliRunner

    from cli.main import app

    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1, num_class_embeds=10,
                down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4).save_pretrained(tmp_path / "m" / "unet")
    DDIMScheduler().save_pretrained(tmp_path / "m" / "scheduler")
    result = CliRunner().invoke(app, ["generate", "--backbone", f"diffusers-pixel:model={tmp_path / 'm'}", "--prompt", "3", "-n", "1",
                                      "--steps", "2", "--out", str(tmp_path / "out")])
    assert result.exception is None, repr(result.exception)  # now: TypeError("new(): invalid data type 'str'")
    assert result.exit_code == 0


@pytest.mark.parametrize("prompt, negative, message", [
    (None, None, "is class-conditional; give the class index 0..9 as the prompt"),
    ("three", None, "prompt 'three' is not a class index; give an integer 0..9"),
    ("12", None, r"class \[12\] out of range; give an integer 0..9"),
    (["1", "2", "3"], None, "3 class labels for 2 images; give one or one per image"),
    ("3", "7", "a class-conditional model takes no negative prompt"),
])
def test_a_bad_class_prompt_on_a_class_conditional_pixel_unet_is_one_line(prompt, negative, message):
    """docs/backbones/diffusers-pixel.md: the class index is the prompt; anything else is one line naming it (no
    prompt, text that is no integer, a class the model lacks, a count that fits no batch, a negative prompt that would
    be ignored), as adm's are."""
    from diffusers import DDIMScheduler, UNet2DModel

    from ugd_core import UgdError
    from ugd_core.backbones import DiffusersPixelBackbone

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1, num_class_embeds=10,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)
    backbone = DiffusersPixelBackbone(unet, DDIMScheduler())
    with pytest.raises(UgdError, match=message) as err:
        backbone.condition(prompt, negative, 2, 1.0)
    assert "\n" not in str(err.value)
    assert backbone.condition(["1", 2], None, 2, 1.0).tolist() == [1, 2]
