"""What the flow-matching path promises beyond the exactness chains: the chain's timesteps and sigmas as the docs
state them (1000σ, the digits flow's unshifted linspace), the refusals (a non-flow scheduler, an unknown dtype, a
chain at pure noise on a backbone that cannot give x̂0 there, a conditioning of another batch), the x̂0 of a fresh
pass, the VAE decode, negative prompt, non-square packing and FLUX.1-dev's guidance embedding against diffusers' own
pipelines, SD3's sequence length with a 2x2 patch and its single batch at cfg_scale 1, text-encoder routing and the
registered parameters, FLUX in bf16, the peer presets on SD3, and the digits flow's registration, training script
and shipped weights.

Everything runs offline on tiny random-weight pipelines (``ugd_sd.testing``) or the weights that ship with the
digits plugin.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ugd_core import SamplerConfig, sample
from ugd_core.errors import UgdError
from ugd_kit.flow import FlowBackbone, FlowSchedule, alpha_bar_of_sigma
from ugd_sd.flow import FluxBackbone, StableDiffusion3Backbone
from ugd_sd.testing import save_tiny_flow_pipeline, tiny_flux_pipeline, tiny_sd3_pipeline

torch.set_num_threads(1)
SEQ = 16  # max_sequence_length of the tiny text encoders, given to both diffusers and ugd


def _start(bb, n=1, seed=0):
    return torch.randn(n, *bb.sample_shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- the chain (ugd_kit.flow)


def test_a_scheduler_without_sigmas_is_refused_as_a_flow_chain():
    """ugd_kit/flow.py, FlowSchedule: a scheduler that is no flow-matching scheduler (no ``sigmas``, as DDPM's) is a
    one-line UgdError naming FlowMatchEulerDiscreteScheduler, not an AttributeError mid-run."""
    from diffusers import DDPMScheduler

    with pytest.raises(UgdError, match="FlowMatchEulerDiscreteScheduler") as err:
        FlowSchedule(DDPMScheduler())
    assert "\n" not in str(err.value)


def test_the_chain_is_the_given_sigmas_at_timesteps_1000_sigma_ending_at_a_equal_1():
    """docs/algorithm.md, "Flow models", the chain: a_t = ā(σ_i), a_prev = ā(σ_{i+1}), the terminal σ = 0 giving a = 1;
    timesteps 1000·σ (float)."""
    sigmas = [1.0, 0.75, 0.5, 0.25]
    chain = FlowSchedule.from_sigmas(lambda n: sigmas[:n]).noise_schedule(4)
    assert chain.timesteps == pytest.approx([1000.0, 750.0, 500.0, 250.0], abs=1e-9)
    assert chain.alpha_bar == pytest.approx([alpha_bar_of_sigma(s) for s in sigmas], abs=1e-12)
    assert chain.alpha_bar_prev == pytest.approx([alpha_bar_of_sigma(s) for s in sigmas[1:]] + [1.0], abs=1e-12)
    assert chain.alpha_bar[0] == 0.0  # σ = 1 is pure noise


def test_sigma_of_a_timestep_is_the_chains_own_sigma_and_t_over_1000_elsewhere():
    """ugd_kit/flow.py, FlowSchedule.sigma: the chain's own (float64) sigma where t is one of its timesteps (not the
    float32-rounded t / 1000), else t / num_train_timesteps."""
    third = 1 / 3
    sched = FlowSchedule.from_sigmas(lambda n: [1.0, 2 * third, third])
    chain = sched.noise_schedule(3)
    t = torch.tensor(chain.timesteps, dtype=torch.float32)
    got = sched.sigma(t)
    assert got.dtype == torch.float64
    assert (got - torch.tensor([1.0, 2 * third, third], dtype=torch.float64)).abs().max().item() < 1e-15
    assert (t.double() / 1000 - torch.tensor([1.0, 2 * third, third], dtype=torch.float64)).abs().max().item() > 1e-9  # so the table matters
    assert sched.sigma(torch.tensor([250.0, 900.0])).tolist() == pytest.approx([0.25, 0.9], abs=1e-12)


def _linear_flow(schedule=None):
    """A pixel flow whose velocity is v(x) = 0.5 x + 1 (independent of t)."""
    schedule = schedule or FlowSchedule.from_sigmas(lambda n: list(np.linspace(1.0, 1 / n, n)))
    schedule.noise_schedule(4)
    return FlowBackbone(lambda x, t, c: 0.5 * x + 1.0, schedule, (1, 2, 2))


def test_x0_at_pure_noise_of_a_new_z_is_a_new_pass():
    """ugd_kit/flow.py, FlowBackbone.x0_at_pure_noise: x̂0 = x − v of the latest pass on this z_t, else of a new pass
    (never the cached x̂0 of another z_t or another t)."""
    bb = _linear_flow()
    t = torch.full((1,), 1000.0)
    z1, z2 = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    bb.eps(z1, t, None)
    # at σ = 1, s = 1 and x = z: x̂0 = z − (0.5 z + 1)
    assert torch.allclose(bb.x0_at_pure_noise(z2, t, None), 0.5 * z2 - 1.0)
    assert torch.allclose(bb.x0_at_pure_noise(z1, t, None), 0.5 * z1 - 1.0)
    bb.eps(z2, torch.full((1,), 500.0), None)  # the same z_t at another t (σ = 0.5) is not the pass asked for
    assert torch.allclose(bb.x0_at_pure_noise(z2, t, None), 0.5 * z2 - 1.0)


class _NoPureNoiseX0:
    """A backbone (the protocol's minimum) whose chain starts at σ = 1 (a_t = 0) but has no ``x0_at_pure_noise``."""

    sample_shape = (1, 2, 2)
    device = torch.device("cpu")
    is_latent = False

    def __init__(self):
        self.scheduler = FlowSchedule.from_sigmas(lambda n: list(np.linspace(1.0, 1 / n, n)))

    def eps(self, z, t, cond):
        return z.clone()

    def condition(self, prompt, negative_prompt, batch_size, cfg_scale):
        return None

    def decode(self, z):
        return z


def test_a_chain_at_pure_noise_without_x0_at_pure_noise_is_a_ugd_error():
    """ugd_core/sampler.py, UniversalGuidance.x0 and docs/algorithm.md ("x̂0 at σ = 1"): at a_t = 0 ε̂ carries no x0;
    a backbone without ``x0_at_pure_noise`` is told so in one line, not a TypeError or a NaN image."""
    with pytest.raises(UgdError, match="x0_at_pure_noise") as err:
        sample(_NoPureNoiseX0(), None, SamplerConfig(num_steps=2), num_images=1, seed=0)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------- SD3 and FLUX (ugd_sd.flow)


def _pipe_images(pipe, **kwargs):
    """diffusers' own decoded images, in ugd's [-1, 1]."""
    return pipe(output_type="pt", max_sequence_length=SEQ, **kwargs).images * 2 - 1


def test_sd3_images_are_the_pipelines_decoded_images():
    """docs/backbones/stable-diffusion-3.md: decoding z / scaling_factor + shift_factor, as StableDiffusion3Pipeline
    (the tiny VAE has SD3's factors 1.5305 / 0.0609): ugd's images equal the pipeline's own decoded images, at the
    pipeline's default size, with the negative prompt in CFG's unconditional rows."""
    pipe = tiny_sd3_pipeline(t5=False)
    bb = StableDiffusion3Backbone.from_pipeline(pipe, max_sequence_length=SEQ)
    z = _start(bb)
    # no height/width: both take the pipeline's default size (docs: "0 (the transformer's sample_size x 8)")
    ref = _pipe_images(pipe, prompt=["a cat"], negative_prompt=["a dog"], num_inference_steps=3, guidance_scale=4.0, latents=z.clone())
    got = sample(bb, None, SamplerConfig(num_steps=3, cfg_scale=4.0), num_images=1, latents=z, prompt="a cat", negative_prompt="a dog").images
    err = (got - ref).abs().max().item()
    assert err < 1e-4, f"max |ugd - diffusers| = {err:.2e}"


@pytest.fixture(scope="module")
def flux_dev():
    return tiny_flux_pipeline(guidance_embeds=True)


def _flux_pipe_run(pipe, z, guidance, output_type):
    n, c, h, w = z.shape
    out = pipe(prompt=["a cat"] * n, num_inference_steps=3, guidance_scale=guidance, latents=pipe._pack_latents(z.clone(), n, c, h, w),
               output_type=output_type, max_sequence_length=SEQ, height=16, width=16).images
    return out


def test_flux_images_are_the_pipelines_decoded_images(flux_dev):
    """docs/backbones/flux.md: decoding z / scaling_factor + shift_factor (FLUX's 0.3611 / 0.1159), as FluxPipeline:
    ugd's images equal the pipeline's own decoded images."""
    bb = FluxBackbone.from_pipeline(flux_dev, height=16, width=16, max_sequence_length=SEQ, guidance=3.5)
    z = _start(bb)
    ref = _flux_pipe_run(flux_dev, z, 3.5, "pt") * 2 - 1
    got = sample(bb, None, SamplerConfig(num_steps=3), num_images=1, latents=z, prompt="a cat").images
    err = (got - ref).abs().max().item()
    assert err < 1e-4, f"max |ugd - diffusers| = {err:.2e}"


def test_a_non_square_flux_chain_equals_the_pipeline(flux_dev):
    """docs/backbones/flux.md: z (C, H, W) is packed into 2x2 patches with image ids from _prepare_latent_image_ids and
    unpacked with _unpack_latents, as FluxPipeline does: at 32x16 pixels (H != W) the chain equals the pipeline's."""
    bb = FluxBackbone.from_pipeline(flux_dev, height=32, width=16, max_sequence_length=SEQ)
    z = _start(bb)
    n, c, h, w = z.shape
    assert (h, w) == (16, 8)
    ref = flux_dev(prompt=["a cat"], num_inference_steps=3, guidance_scale=3.5, latents=flux_dev._pack_latents(z.clone(), n, c, h, w),
                   output_type="latent", max_sequence_length=SEQ, height=32, width=16).images
    ref = flux_dev._unpack_latents(ref, 32, 16, flux_dev.vae_scale_factor)
    got = sample(bb, None, SamplerConfig(num_steps=3), num_images=1, latents=z, prompt="a cat").latents
    assert (got - ref).abs().max().item() < 1e-5


def test_flux_dev_takes_the_guidance_it_is_given(flux_dev):
    """docs/backbones/flux.md, parameter `guidance`: FLUX.1-dev's distilled guidance embedding. With guidance=7 the
    chain equals FluxPipeline's at guidance_scale=7 (and differs from the default 3.5's)."""
    bb = FluxBackbone.from_pipeline(flux_dev, height=16, width=16, max_sequence_length=SEQ, guidance=7.0)
    z = _start(bb)
    ref = flux_dev._unpack_latents(_flux_pipe_run(flux_dev, z, 7.0, "latent"), 16, 16, flux_dev.vae_scale_factor)
    other = flux_dev._unpack_latents(_flux_pipe_run(flux_dev, z, 3.5, "latent"), 16, 16, flux_dev.vae_scale_factor)
    got = sample(bb, None, SamplerConfig(num_steps=3), num_images=1, latents=z, prompt="a cat").latents
    assert (got - ref).abs().max().item() < 1e-5
    assert (other - ref).abs().max().item() > 1e-3  # the embedding matters in this tiny model


def test_sd3_with_a_2x2_patch_takes_mu_from_the_patch_sequence_length():
    """docs/backbones/stable-diffusion-3.md: under use_dynamic_shifting, μ = calculate_shift of the latent sequence
    length, as StableDiffusion3Pipeline counts it: (H / vae / patch)·(W / vae / patch) tokens (SD3's patch is 2). The
    unguided chain equals the pipeline's."""
    from diffusers import SD3Transformer2DModel
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    pipe = tiny_sd3_pipeline(t5=False, dynamic_shift=True)
    torch.manual_seed(1)
    pipe.transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                             num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                                             pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16)
    bb = StableDiffusion3Backbone.from_pipeline(pipe, max_sequence_length=SEQ)
    tokens = (bb.height // bb.vae_factor // 2) * (bb.width // bb.vae_factor // 2)
    assert tokens == 16
    c = pipe.scheduler.config
    assert bb.mu() == pytest.approx(calculate_shift(tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift))
    z = _start(bb)
    ref = pipe(prompt=["a cat"], num_inference_steps=3, guidance_scale=4.0, latents=z.clone(), output_type="latent",
               max_sequence_length=SEQ, height=bb.height, width=bb.width).images
    got = sample(bb, None, SamplerConfig(num_steps=3, cfg_scale=4.0), num_images=1, latents=z, prompt="a cat").latents
    assert (got - ref).abs().max().item() < 1e-5


def test_sd3_at_cfg_scale_one_runs_no_unconditional_batch():
    """docs/backbones/stable-diffusion-3.md (`cfg_scale`) and StableDiffusion3Pipeline (CFG only for guidance_scale > 1):
    at cfg_scale = 1 the transformer sees only the conditional rows, one per image."""
    bb = StableDiffusion3Backbone.from_pipeline(tiny_sd3_pipeline(t5=False), max_sequence_length=SEQ)
    rows: list[int] = []
    hook = bb.transformer.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["hidden_states"].shape[0]), with_kwargs=True)
    try:
        sample(bb, None, SamplerConfig(num_steps=2, cfg_scale=1.0), num_images=2, seed=0, prompt="a cat")
    finally:
        hook.remove()
    assert rows == [2, 2]


def test_a_conditioning_of_another_batch_is_refused_by_name():
    """ugd_sd/flow.py, velocity (SD3 with its CFG rows, FLUX without): a conditioning encoded for another batch is a
    ValueError saying so, not a shape error deep in the transformer."""
    sd3 = StableDiffusion3Backbone.from_pipeline(tiny_sd3_pipeline(t5=False), max_sequence_length=SEQ)
    flux = FluxBackbone.from_pipeline(tiny_flux_pipeline(guidance_embeds=False), height=16, width=16, max_sequence_length=SEQ)
    for bb, cfg in ((sd3, 4.0), (sd3, 1.0), (flux, 1.0)):
        cond = bb.condition("a cat", None, 1, cfg)
        with pytest.raises(ValueError, match="conditioning batch does not match z_t"):
            bb.velocity(_start(bb, n=2), torch.full((2,), 1000.0), cond)


def test_text_encoders_wait_on_the_cpu_off_a_cpu_device():
    """docs/backbones/stable-diffusion-3.md (and flux.md, "as for stable-diffusion-3"): the text encoders wait on the
    CPU whenever the backbone's device is not the CPU (checked on the meta device: shapes only, no compute)."""
    bb = FluxBackbone.from_pipeline(tiny_flux_pipeline(), height=16, width=16, device="meta")
    assert bb.offload_text
    assert next(bb.transformer.parameters()).device.type == "meta"
    assert {next(m.parameters()).device.type for m in bb._text_modules().values()} == {"cpu"}
    on_cpu = FluxBackbone.from_pipeline(tiny_flux_pipeline(), height=16, width=16)
    assert not on_cpu.offload_text


def test_text_encoders_visit_the_device_for_encode_prompt_and_return():
    """docs/backbones/stable-diffusion-3.md: with offloading, the text encoders move to the device for the one
    encode_prompt of a run and back to the CPU (module moves recorded, not performed: the device is pretend)."""
    bb = FluxBackbone.from_pipeline(tiny_flux_pipeline(), height=16, width=16, max_sequence_length=SEQ, offload_text=True)
    bb.device = torch.device("meta")
    moves: list[tuple[str, str]] = []
    for role, m in bb._text_modules().items():
        m.to = lambda dev, role=role, m=m: (moves.append((role, str(dev))), m)[1]
    seen: list[list[tuple[str, str]]] = []

    def encode_prompt(device, prompt, prompt_2, **kw):
        seen.append(list(moves))
        n = len(prompt)
        return torch.zeros(n, 4, 32), torch.zeros(n, 32), torch.zeros(4, 3)

    bb.pipe.encode_prompt = encode_prompt
    bb.condition("a cat", None, 1, 1.0)
    roles = sorted(bb._text_modules())
    assert sorted(seen[0]) == sorted((r, "meta") for r in roles)
    assert sorted(moves[len(roles):]) == sorted((r, "cpu") for r in roles)


def test_sd3_t5_false_loads_a_pipeline_without_t5(tmp_path):
    """docs/backbones/stable-diffusion-3.md, parameter `t5`: false skips the T5 encoder of a folder that has one
    (diffusers then feeds zeros in its place); the default keeps it."""
    from ugd_core.registry import load_registry

    folder = save_tiny_flow_pipeline(tmp_path / "sd3", kind="sd3")
    assert StableDiffusion3Backbone.from_pretrained(str(folder), t5=False, max_sequence_length=SEQ).pipe.text_encoder_3 is None
    assert StableDiffusion3Backbone.from_pretrained(str(folder), max_sequence_length=SEQ).pipe.text_encoder_3 is not None
    # the same through the registered backbone (`stable-diffusion-3:model=DIR,t5=false`)
    bb = load_registry().build_from_spec("backbone", f"stable-diffusion-3:model={folder},t5=false,max_sequence_length={SEQ}")
    assert bb.pipe.text_encoder_3 is None and bb.max_sequence_length == SEQ


def test_flux_registered_parameters_reach_the_backbone(tmp_path):
    """ugd_sd/plugin.py and docs/backbones/flux.md: `flux:model=DIR,guidance=G,height=H,width=W,max_sequence_length=L`
    builds a FluxBackbone with those values."""
    from ugd_core.registry import load_registry

    folder = save_tiny_flow_pipeline(tmp_path / "flux", kind="flux")
    bb = load_registry().build_from_spec("backbone", f"flux:model={folder},guidance=7,height=32,width=16,max_sequence_length={SEQ}")
    assert isinstance(bb, FluxBackbone)
    assert (bb.guidance, bb.height, bb.width, bb.max_sequence_length) == (7.0, 32, 16, SEQ)


@pytest.mark.parametrize("cls", [StableDiffusion3Backbone, FluxBackbone])
def test_an_unknown_dtype_name_is_one_line(tmp_path, cls):
    """ugd_sd/flow.py, from_pretrained: a dtype name outside fp32/fp16/bf16 is a one-line UgdError naming the choices."""
    with pytest.raises(UgdError, match="dtype='fp64' is not one of fp32, fp16, bf16"):
        cls.from_pretrained(str(tmp_path / "nowhere"), dtype="fp64")


def test_flux_in_bf16_runs_finite_with_float32_latents():
    """docs/backbones/stable-diffusion-3.md, "Precision and memory" (flux.md: the same knobs): --dtype bf16 casts every
    module, the latents and the Euler arithmetic stay float32."""
    bb = FluxBackbone.from_pipeline(tiny_flux_pipeline(), height=16, width=16, max_sequence_length=SEQ)
    out = sample(bb, None, SamplerConfig(num_steps=2, dtype="bf16"), num_images=1, seed=0, prompt="a cat")
    assert bb.transformer.dtype == torch.bfloat16 and out.latents.dtype == torch.float32
    assert torch.isfinite(out.images).all()


# ------------------------------------------------------------------------------------------- the digits flow


def test_digits_flow_steps_on_unshifted_sigmas():
    """docs/backbones/digits-flow.md: FlowMatchEulerDiscreteScheduler with shift 1: sigmas linspace(1, 1/1000, n),
    timesteps 1000σ."""
    from ugd_digits.backbone_flow import load_flow_backbone

    bb = load_flow_backbone()
    ts, sig = bb.scheduler.sigmas(20)
    assert sig[:-1] == pytest.approx(list(np.linspace(1.0, 1 / 1000, 20)), abs=1e-6) and sig[-1] == 0.0
    assert ts == pytest.approx([1000 * s for s in sig[:-1]], abs=1e-3)


def test_digits_flow_registration_builds_the_flow_backbone_with_its_defaults():
    """ugd_digits/plugin.py and docs/backbones/digits-flow.md: the backbone `digits-flow` is the rectified flow
    (v = ε − x0), not the DDPM; "default: preset auto, 20 steps (as digits)"."""
    from ugd_core.registry import load_registry
    from ugd_digits.backbone_flow import DigitsFlowBackbone

    reg = load_registry()
    bb = reg.build("backbone", "digits-flow", {})
    assert isinstance(bb, DigitsFlowBackbone) and bb.prediction_type == "flow"
    entry = reg.get("backbone", "digits-flow")
    assert entry.default_preset == "auto" and entry.default_steps == 20


def test_the_shipped_digits_flow_predicts_the_velocity():
    """docs/backbones/digits-flow.md: the network predicts v = ε − x0 at timestep 1000σ, trained to a loss of 0.088
    (σ logit-normal). On held-out canvases the backbone's velocity comes near that loss (measured 0.076); fed σ
    instead of 1000σ it gives 1.05, the DDPM's ε-weights 0.76, a zero velocity 1.94."""
    from ugd_digits.backbone_flow import load_flow_backbone
    from ugd_digits.data import load_digits, sample_canvases

    bb = load_flow_backbone()
    gen = torch.Generator().manual_seed(0)
    x0, _, _ = sample_canvases(load_digits("heldout"), 64, gen)
    sigma = torch.sigmoid(torch.randn(64, generator=gen))
    noise = torch.randn(x0.shape, generator=gen)
    s = sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        v = bb.velocity((1 - s) * x0 + s * noise, 1000 * sigma, None)
    loss = (v - (noise - x0)).pow(2).mean().item()
    assert loss < 0.15, loss


def test_train_flow_draws_logit_normal_sigmas_and_records_init(tmp_path, monkeypatch):
    """ugd_digits/train_flow.py and docs/backbones/digits-flow.md: σ ~ logit-normal(0, 1) (Esser et al. 2024, §3.1);
    the EMA weights carry `init` and `step` in their metadata, the log's first line records the settings and `init`."""
    from safetensors import safe_open

    from ugd_digits import train_flow

    monkeypatch.setattr(train_flow, "WEIGHTS", tmp_path / "w.safetensors")
    monkeypatch.setattr(train_flow, "STATE", tmp_path / "state.pt")
    monkeypatch.setattr(train_flow, "LOG", tmp_path / "log.jsonl")
    drawn: list[torch.Tensor] = []
    loss = train_flow.flow_loss

    def recording(unet, x0, noise, sigma):
        drawn.append(sigma.clone())
        return loss(unet, x0[:2], noise[:2], sigma[:2])

    monkeypatch.setattr(train_flow, "flow_loss", recording)
    train_flow.main(["--max-steps", "2", "--batch", "256", "--threads", "1", "--save-every", "1", "--fresh"])
    logit = torch.logit(torch.cat(drawn))
    assert abs(logit.mean().item()) < 0.15 and 0.85 < logit.std().item() < 1.15  # uniform σ: std π/√3 ≈ 1.81
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["init"] == "random" and meta["step"] == "2"
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert first["init"] == "random" and first["batch"] == 256


def test_the_shipped_digits_flow_weights_say_how_they_were_trained():
    """docs/backbones/digits-flow.md, "What shipped": 4,000 steps, warm-started from the DDPM (`init: ddpm` in the
    weights' metadata)."""
    from safetensors import safe_open

    from ugd_digits.backbone_flow import WEIGHTS

    with safe_open(str(WEIGHTS), "pt") as f:
        meta = f.metadata()
    assert meta["init"] == "ddpm" and meta["step"] == "4000" and "v = eps - x0" in meta["recipe"]


@pytest.fixture(scope="module")
def sd3_no_t5():
    return StableDiffusion3Backbone.from_pipeline(tiny_sd3_pipeline(t5=False), max_sequence_length=SEQ)


@pytest.mark.parametrize("preset", ["ugd", "dps", "freedom", "mpgd", "tfg", "lgd"])
def test_every_peer_preset_runs_finite_on_sd3(sd3_no_t5, preset):
    """docs/backbones/stable-diffusion-3.md: "every preset — ugd, dps, freedom, mpgd, tfg, lgd — guides it" and, under
    "Checked", "every peer preset runs finite" (the existing preset test runs them on FLUX only); with CFG rows."""
    from ugd_core import make_guide
    from ugd_core.presets import PRESETS

    guide = make_guide("bright", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=0.3)
    cfg = SamplerConfig(**{**PRESETS[preset][1], "num_steps": 2, "cfg_scale": 2.0})
    out = sample(sd3_no_t5, guide, cfg, num_images=1, seed=1, prompt="a cat")
    assert torch.isfinite(out.images).all() and out.stats.guidance.nonfinite_skipped == 0
