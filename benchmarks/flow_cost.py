"""Per-step cost and peak memory of ugd on the rectified-flow backbones (SD3, FLUX.1) against a hand-written floor.

    python benchmarks/flow_cost.py                          # CUDA: the full-size configs at 1024x1024; CPU: the tiny ones
    python benchmarks/flow_cost.py --models flux --modes forward,forward+knobs --steps 4 --dtype bf16
    python benchmarks/flow_cost.py --size mid --device cpu --steps 3 --repeats 3 --cpu-time   # real widths, fewer layers

Both sides run the same backbone modules with random weights, since nothing is downloaded:
``--size full`` builds stabilityai/stable-diffusion-3.5-medium and black-forest-labs/FLUX.1-dev from the
public configs typed in below (directly on the GPU, at 1024x1024, T5 at the pipelines' default sequence
lengths), ``--size mid`` the same blocks at their released widths but fewer of them (``MID``) at 128x128 on any
device, ``--size tiny`` the tiny pipelines of ``ugd_sd.testing`` on any device. They share the guide (a
cheap differentiable one: the squared distance of the decoded image's mean brightness to 0.3) and the
passes per step:

    unguided        one transformer pass (SD3: the batched CFG pair; FLUX.1-dev: its guidance embedding), no autograd
    forward         + VAE decode of x0_hat, guide forward/backward, gradient back through the VAE and the
                    transformer to z_t, added to eps (forward_strength 1, constant schedule, DDIM eta = 0)
    forward+knobs   forward with the memory knobs of the low-memory preset (``MEMORY_KNOBS``) on both sides

The floor is that step written plainly with the backbone's own callables (``floor_step`` below):
``eps`` (the flow as an eps-model, eps = x + (1 - sigma) v: ugd_kit/flow.py), ``x0_at_pure_noise`` at
the chain's first step (sigma = 1, a_t = 0), ``decode``, and the DDIM update on the chain of
``NoiseSchedule.from_scheduler``. Its final latents are compared with ugd's ("same result"). Time per
step is measured between step ends (CUDA events on GPU), after the first step of the run and after a
warm-up run; peak memory is torch.cuda.max_memory_allocated over the run, weights included (the text
encoders too: the backbone brings them to the GPU for the untimed text encoding, as in a user's run).
Timings never go into a test; compare ratios measured in the same run. Full size needs a CUDA device and
runs in bf16 unless ``--dtype`` says otherwise; a cell that runs out of GPU memory is reported as such.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_timing import CostCell, finish, gigabytes, timed  # noqa: E402

from ugd_core import SamplerConfig, make_guide, sample  # noqa: E402
from ugd_core.sampler import NoiseSchedule  # noqa: E402
from ugd_kit.testing import tiny_clip_tokenizer  # noqa: E402
from ugd_sd.flow import FluxBackbone, StableDiffusion3Backbone, _FlowPipelineBackbone  # noqa: E402
from ugd_sd.testing import tiny_flux_pipeline, tiny_sd3_pipeline  # noqa: E402
from sd_cost import CLIP_BIGG, CLIP_L  # noqa: E402  (the CLIP-L and OpenCLIP bigG towers SD3 and FLUX.1 reuse)

# ---- full-size configs, typed in from the public config files ---------------------------------------
# Parameter counts are checked on the meta device by tests/test_flow_full_configs.py.
#
# stabilityai/stable-diffusion-3.5-medium: transformer/config.json (SD3Transformer2DModel, MMDiT-X;
# 2,243,171,520 parameters, and the 384x384 position table as a buffer). The values as diffusers'
# scripts/convert_sd3_to_diffusers.py writes them for "sd3.5 2b": sample_size 128, patch_size 2, in_channels 16,
# joint_attention_dim 4096, num_attention_heads = num_layers (24), caption_projection_dim from the checkpoint
# (24 x 64 = 1536), pos_embed_max_size 384 (diffusers' single_file_utils recognises sd35_medium by its
# 147456 = 384^2 positions), dual attention in layers 0-12, qk_norm rms_norm; pooled_projection_dim 2048
# (CLIP-L 768 + bigG 1280 pooled) and out_channels 16 are the class defaults. Stability-AI/sd3.5 sd3_impls.py
# derives the same from the checkpoint (depth = width / 64, the x_block attn2 layers = the dual ones).
SD35M_TRANSFORMER: dict[str, Any] = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)
# stabilityai/stable-diffusion-3.5-medium: vae/config.json (83,819,683 parameters): SDXL's VAE layout with
# 16 latent channels and no quant convs, scaling 1.5305 / shift 0.0609 (diffusers convert_sd3_to_diffusers.py;
# Stability-AI/sd3.5 sd3_impls.py SD3LatentFormat)
SD3_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
    use_post_quant_conv=False,
)
# text_encoder_3 (SD3.5) / text_encoder_2 (FLUX.1) config.json: google/t5-v1_1-xxl's encoder (T5EncoderModel,
# 4,762,310,656 parameters; Stability-AI/sd3.5 sd3_infer.py T5_CONFIG; T5 v1.1's gated-GELU feed-forward)
T5_XXL: dict[str, Any] = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                              feed_forward_proj="gated-gelu")
# stabilityai/stable-diffusion-3.5-medium: scheduler/scheduler_config.json: FlowMatchEulerDiscreteScheduler with
# shift 3.0 (Stability-AI/sd3.5 sd3_infer.py CONFIGS["sd3.5_medium"]); the Hub file itself could not be read
# here, so no dynamic shifting is assumed
SD35M_SCHEDULER: dict[str, Any] = dict(shift=3.0)

# black-forest-labs/FLUX.1-dev: transformer/config.json (FluxTransformer2DModel; 11,901,408,320 parameters:
# 19 double-stream + 38 single-stream blocks, width 3072 = 24 heads x 128); black-forest-labs/flux
# src/flux/util.py configs["flux-dev"]: in_channels 64 (16 latent channels x 2x2 packing), vec_in_dim 768,
# context_in_dim 4096, hidden_size 3072, num_heads 24, depth 19 + 38, axes_dim (16, 56, 56), guidance_embed
FLUX_DEV_TRANSFORMER: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)
# black-forest-labs/FLUX.1-dev: vae/config.json (83,819,683 parameters): SD3's layout with FLUX's factors
# (black-forest-labs/flux util.py ae_params: ch 128, ch_mult 1,2,4,4, 2 res blocks, z 16, scale 0.3611,
# shift 0.1159; its AutoEncoder has no quant convs)
FLUX_VAE: dict[str, Any] = dict(SD3_VAE, scaling_factor=0.3611, shift_factor=0.1159)
# black-forest-labs/FLUX.1-dev: scheduler/scheduler_config.json; the shift mu runs linearly from 0.5 at 256
# tokens to 1.15 at 4096 (black-forest-labs/flux src/flux/sampling.py get_schedule); shift 3.0 is unused with it
FLUX_DEV_SCHEDULER: dict[str, Any] = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                          base_image_seq_len=256, max_image_seq_len=4096)
FULL_SIZE = 1024  # height and width of the full-size runs
FULL_T5_SEQ = {"sd3": 256, "flux": 512}  # the pipelines' default max_sequence_length
# --size mid: the full-size configs' widths (every layer as in the release) with fewer of them, at a small image, so
# that a step's compute is made of real-width blocks and fits a CPU: SD3.5-medium's first 2 joint blocks (one with
# dual attention), FLUX.1-dev's 1 double- and 1 single-stream block, text towers of 1 layer (their widths, untimed)
MID = dict(size=128, t5_seq=64, layers={"sd3": dict(num_layers=2), "flux": dict(num_layers=1, num_single_layers=1)},
           text_layers=1)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODELS = ("sd3", "flux")
# the memory knobs of the low-memory preset (ugd_core/builtin.py); the floor runs with the same module switches
MEMORY_KNOBS: dict[str, Any] = dict(grad_checkpointing=True, vae_slicing=True, vae_tiling=True)
_FORWARD: dict[str, Any] = dict(forward_strength=1.0, forward_schedule="constant", eta=0.0)
MODES: dict[str, dict[str, Any]] = {
    "unguided": dict(),
    "forward": _FORWARD,
    "forward+knobs": dict(_FORWARD, **MEMORY_KNOBS),
}
CFG_SCALE = 7.5  # SamplerConfig's default; SD3 batches the CFG pair, FLUX.1-dev ignores it (guidance embedding 3.5)
PROMPT = "a photo of a cat"
SEQ = 16  # max_sequence_length of the tiny text encoders
SAME_TOL = {"fp32": 1e-4, "bf16": 5e-2}  # max |ugd - floor| of the final latents that counts as the same result


def full_size_components(model: str, device: torch.device | str = "meta", dtype: torch.dtype | None = None,
                         mid: bool = False) -> dict[str, Any]:
    """The pipeline components of SD3.5-medium (``sd3``) or FLUX.1-dev (``flux``) from the configs above, with
    random weights built on ``device`` (``meta``: shapes only, no memory) and cast to ``dtype``, as the keyword
    arguments of ``StableDiffusion3Pipeline`` / ``FluxPipeline``; ``mid``: with the fewer layers of ``MID``. The
    tokenizers are byte-level ones (ids < 520, inside every vocabulary here): they only feed the untimed text
    encoding."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    if model not in MODELS:
        raise ValueError(f"model={model!r}: use {', '.join(MODELS)}")

    def made(m: torch.nn.Module) -> torch.nn.Module:  # cast each module as it is built: one fp32 copy at a time
        return m.to(dtype) if dtype is not None else m

    tok, tok_t5 = tiny_clip_tokenizer(max_length=77), tiny_clip_tokenizer(max_length=MID["t5_seq"] if mid else FULL_T5_SEQ[model])
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    depth: dict[str, Any] = MID["layers"][model] if mid else {}
    if mid and model == "sd3":
        depth = dict(depth, dual_attention_layers=tuple(i for i in SD35M_TRANSFORMER["dual_attention_layers"] if i < depth["num_layers"]))
    clip_l, clip_g, t5 = (dict(CLIP_L, num_hidden_layers=MID["text_layers"]), dict(CLIP_BIGG, num_hidden_layers=MID["text_layers"]),
                          dict(T5_XXL, num_layers=MID["text_layers"])) if mid else (CLIP_L, CLIP_BIGG, T5_XXL)
    sched = FlowMatchEulerDiscreteScheduler(**(SD35M_SCHEDULER if model == "sd3" else FLUX_DEV_SCHEDULER))
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of minutes
        if model == "sd3":
            return dict(
                transformer=made(SD3Transformer2DModel(**dict(SD35M_TRANSFORMER, **depth))),
                vae=made(AutoencoderKL(**SD3_VAE)),
                text_encoder=made(CLIPTextModelWithProjection(CLIPTextConfig(**clip_l, **ids))),
                tokenizer=tok,
                text_encoder_2=made(CLIPTextModelWithProjection(CLIPTextConfig(**clip_g, **ids))),
                tokenizer_2=tiny_clip_tokenizer(max_length=77),
                text_encoder_3=made(T5EncoderModel(T5Config(**t5))),
                tokenizer_3=tok_t5,
                scheduler=sched,
            )
        return dict(
            transformer=made(FluxTransformer2DModel(**dict(FLUX_DEV_TRANSFORMER, **depth))),
            vae=made(AutoencoderKL(**FLUX_VAE)),
            text_encoder=made(CLIPTextModel(CLIPTextConfig(**clip_l, **ids))),  # CLIP-L without projection
            tokenizer=tok,
            text_encoder_2=made(T5EncoderModel(T5Config(**t5))),
            tokenizer_2=tok_t5,
            scheduler=sched,
        )


def build(model: str, tiny: bool, dtype: torch.dtype, device: torch.device, mid: bool = False) -> _FlowPipelineBackbone:
    """A random-weight pipeline in ``dtype`` on ``device``, as a ugd backbone (the pipeline a user loads
    with ``torch_dtype``): the tiny configs, the full-size ones at 1024x1024 (``meta``: shapes only), or (``mid``)
    the full-size widths with the fewer layers of ``MID`` at its small image."""
    if tiny:
        if model == "sd3":
            pipe = tiny_sd3_pipeline(0).to(device=device, dtype=dtype)
            return StableDiffusion3Backbone.from_pipeline(pipe, max_sequence_length=SEQ, device=device)
        pipe = tiny_flux_pipeline(0).to(device=device, dtype=dtype)  # FLUX.1-dev-like: guidance_embeds
        return FluxBackbone.from_pipeline(pipe, height=16, width=16, max_sequence_length=SEQ, device=device)
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    components = full_size_components(model, device, dtype, mid=mid)
    # text encoders wait on the CPU between encodings (the backbone's default off the CPU; meta stays meta)
    side = MID["size"] if mid else FULL_SIZE
    kwargs: dict[str, Any] = dict(height=side, width=side, max_sequence_length=MID["t5_seq"] if mid else FULL_T5_SEQ[model],
                                  device=device, offload_text=device.type not in ("cpu", "meta"))
    if model == "sd3":
        return StableDiffusion3Backbone.from_pipeline(StableDiffusion3Pipeline(**components), **kwargs)
    return FluxBackbone.from_pipeline(FluxPipeline(**components), **kwargs)


def parameter_counts(bb: _FlowPipelineBackbone) -> dict[str, int]:
    """Parameters per module role (denoiser, vae, text, text_2, text_3)."""
    return {role: sum(p.numel() for p in m.parameters()) for role, m in bb._modules().items()}


def bright_guide(level: float = 0.3) -> Any:
    """Squared distance of the image's mean brightness to ``level``: differentiable and nearly free."""
    return make_guide("bright", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=level)


# ---- the hand-written floor ------------------------------------------------------------------------
def floor_step(bb: _FlowPipelineBackbone, guide: Any, cond: Any, z: torch.Tensor, t: torch.Tensor, a: float, a_prev: float,
               strength: float) -> torch.Tensor:
    """One DDIM (eta = 0) step of forward universal guidance written plainly (``strength`` 0: unguided)."""

    def x0_of(z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        # at a = 0 (sigma = 1) eps = z holds no x0: the flow's own x0_hat = x - v of the same pass
        return (z - math.sqrt(1 - a) * eps) / math.sqrt(a) if a > 0 else bb.x0_at_pure_noise(z, t, cond)

    if strength > 0:
        zg = z.detach().requires_grad_(True)
        with torch.enable_grad():
            eps = bb.eps(zg, t, cond)
            x0 = x0_of(zg, eps)
            loss = guide.loss(guide.f(bb.decode(x0)), guide.target).sum()
            (g,) = torch.autograd.grad(loss, zg)
        eps = eps.detach() + strength * g
        x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a) if a > 0 else x0.detach()
    else:
        with torch.no_grad():
            eps = bb.eps(z, t, cond)
            x0 = x0_of(z, eps)
    return (math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps).detach()


def floor_run(bb: _FlowPipelineBackbone, guide: Any, knobs: dict[str, Any], steps: int, z: torch.Tensor,
              on_step: Callable[[], None]) -> torch.Tensor:
    """Text encoding, the chain and the final decode: what ``sample()`` does, by hand. Returns the final latents."""
    bb.configure(SamplerConfig(**{k: knobs.get(k, False) for k in MEMORY_KNOBS}))  # the module switches ugd's run sets
    cond = bb.condition(PROMPT, None, z.shape[0], CFG_SCALE)
    chain = NoiseSchedule.from_scheduler(bb.scheduler, steps)
    strength = knobs.get("forward_strength", 0.0)
    for t_i, a, a_prev in zip(chain.timesteps, chain.alpha_bar, chain.alpha_bar_prev):
        t = torch.full((z.shape[0],), t_i, device=bb.device, dtype=torch.float32)
        z = floor_step(bb, guide, cond, z, t, a, a_prev, strength)
        on_step()
    with torch.no_grad():
        bb.decode(z).clamp(-1, 1)  # the final decode sample() makes, for equal work
    return z


def ugd_run(bb: _FlowPipelineBackbone, guide: Any, knobs: dict[str, Any], steps: int, z: torch.Tensor,
            on_step: Callable[[], None]) -> torch.Tensor:
    """``ugd_core.sample`` from the same start; returns the final latents."""
    cfg = SamplerConfig(num_steps=steps, cfg_scale=CFG_SCALE, **knobs)
    out = sample(bb, guide if knobs else None, cfg, num_images=z.shape[0], latents=z, prompt=PROMPT, progress=lambda i, n: on_step())
    return out.latents


# ---- timing ----------------------------------------------------------------------------------------
@dataclass
class Cell(CostCell):
    max_diff: float  # max |ugd - floor| of the final latents
    same: bool
    out_of_memory: bool = False  # the cell ran out of GPU memory (times NaN)


def main(argv: list[str] | None = None) -> list[Cell]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=("auto", "full", "mid", "tiny"), default="auto",
                   help="auto: full configs on CUDA, tiny on CPU; mid: the full configs' widths, fewer layers, a 128x128 image (any device)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--steps", type=int, default=4, help="DDIM steps per timed run (the first is not timed); at least 2")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="default: bf16 at full size (the dtype the model cards load them in), fp32 for the tiny configs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="ugd and floor runs per mode, interleaved; the median is reported")
    p.add_argument("--cpu-time", action="store_true",
                   help="on CPU, time steps in this process's CPU time rather than wall clock (steadier on a shared machine)")
    p.add_argument("--json", default="", help="also write every cell to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    tiny = args.size == "tiny" or (args.size == "auto" and device.type != "cuda")
    mid = args.size == "mid"
    if not tiny and not mid and not (device.type == "cuda" and torch.cuda.is_available()):
        print(f"flow_cost: --size full (SD3.5-medium, FLUX.1-dev at 1024x1024) needs a CUDA device, got --device {args.device}"
              f"{'' if torch.cuda.is_available() else ' and none is present'}; --size tiny runs anywhere", file=sys.stderr)
        raise SystemExit(2)
    if args.steps < 2:
        sys.exit("--steps must be at least 2 (the first step is not timed)")
    dname = args.dtype or ("fp32" if tiny or (mid and device.type != "cuda") else "bf16")
    clock = time.process_time if args.cpu_time and device.type == "cpu" else time.perf_counter
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # its warnings would break the table
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for name, given, known in (("model", models, MODELS), ("mode", modes, MODES)):
        for m in given:
            if m not in known:
                sys.exit(f"unknown {name} {m!r}; use: {', '.join(known)}")
    start = time.perf_counter()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    size = ("tiny configs" if tiny else f"full-size configs (SD3.5-medium, FLUX.1-dev) at {FULL_SIZE}x{FULL_SIZE}" if not mid
            else f"mid configs (the full-size widths; {MID['layers']}; text towers of {MID['text_layers']} layer) at {MID['size']}x{MID['size']}")
    print(f"machine: {gpu}, torch {torch.__version__}, {size}, {dname}, batch 1, CFG {CFG_SCALE} (SD3; FLUX.1-dev: "
          f"guidance embedding 3.5), {args.steps} DDIM steps per run (first untimed), threads {args.threads}, "
          f"{args.repeats} interleaved run(s) per side (median), {'CPU' if clock is time.process_time else 'wall'} time\n", flush=True)
    if not tiny:
        print(f"memory knobs of forward+knobs: {', '.join(MEMORY_KNOBS)}\n", flush=True)
    print("| model | dtype | mode | ugd s/step | floor s/step | ratio | ugd peak GB | floor peak GB | finite | same result |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    cells: list[Cell] = []
    guide = bright_guide()
    oom = torch.cuda.OutOfMemoryError
    for model in models:
        bb = build(model, tiny, DTYPES[dname], device, mid=mid)
        if not tiny:
            counts = ", ".join(f"{role} {n / 1e6:.1f}M" for role, n in parameter_counts(bb).items())
            print(f"| {model} | parameters: {counts} | | | | | | | | |", flush=True)
        z0 = torch.randn((1, *bb.sample_shape), generator=torch.Generator().manual_seed(0)).to(device)
        for warm in ("forward", "forward+knobs"):  # warm-up; full size in fp32 may only fit with the knobs
            try:
                ugd_run(bb, guide, MODES[warm], 2, z0, lambda: None)
                floor_run(bb, guide, MODES[warm], 2, z0, lambda: None)
                break
            except oom:
                pass
            torch.cuda.empty_cache()  # out of memory: free what the failed run held, try with the knobs
        for mode in modes:
            knobs = MODES[mode]
            out_of_memory = False
            try:
                us, fs = [], []
                for _ in range(args.repeats):  # interleaved, so a change of the machine's load hits both sides
                    us.append(timed(device, lambda cb: ugd_run(bb, guide, knobs, args.steps, z0, cb), clock))
                    fs.append(timed(device, lambda cb: floor_run(bb, guide, knobs, args.steps, z0, cb), clock))
                (u, up, zu), (f, fp, zf) = (sorted(runs, key=lambda r: r[0])[len(runs) // 2] for runs in (us, fs))  # medians
            except oom:
                out_of_memory = True
            if out_of_memory:
                torch.cuda.empty_cache()  # after the except block: its traceback no longer holds the graph
                cells.append(Cell(model, dname, mode, math.nan, math.nan, None, None, False, math.nan, False, True))
                print(f"| {model} | {dname} | {mode} | out of memory | | | | | | |", flush=True)
                continue
            diff = (zu.float() - zf.float()).abs().max().item()
            finite = bool(torch.isfinite(zu).all() and torch.isfinite(zf).all())
            cell = Cell(model, dname, mode, u, f, up, fp, finite, diff, diff <= SAME_TOL[dname])
            cells.append(cell)
            print(f"| {model} | {dname} | {mode} | {u:.4f} | {f:.4f} | {u / f:.3f} | {gigabytes(up)} | {gigabytes(fp)} | "
                  f"{'yes' if finite else 'NO'} | {'yes' if cell.same else 'NO'} (max diff {diff:.1e}) |", flush=True)
        del bb
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    if tiny or mid:
        why = f"this run used the {'tiny' if tiny else 'mid'} configs; --size full measures it" if torch.cuda.is_available() \
            else "no CUDA device was present"
        print(f"GPU cost at full size (SD3.5-medium, FLUX.1-dev at {FULL_SIZE}x{FULL_SIZE}): unmeasured ({why})")
    return finish(cells, start, args.json)


if __name__ == "__main__":
    main()
