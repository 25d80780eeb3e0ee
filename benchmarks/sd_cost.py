"""Per-step cost and peak memory of ugd on Stable Diffusion against a hand-written floor.

    python benchmarks/sd_cost.py                       # CUDA: SD 1.5 and SDXL shapes; CPU: the tiny configs
    python benchmarks/sd_cost.py --models sd15 --dtypes bf16 --modes forward --steps 4

Both sides run the same modules (random weights, built from the public configs below, since
nothing is downloaded), the same guide (the paper's segmentation guide: torchvision
DeepLabV3-ResNet50, per-pixel cross-entropy to a mask) and the same passes per step:

    unguided                    one batched CFG UNet pass, no autograd
    forward                     + decode, guide forward/backward, gradient back through VAE and UNet
    forward+backward (m=5)      + 5 SGD steps on x0_hat through decode and guide
    fwd+bwd (m=5)+rec (k=3)     the whole step three times, re-noised in between

The floor is the loop written plainly with those modules (`floor_step` below). Time per DDIM step
is measured between step ends (CUDA events on GPU), after the first step of the run and after a
warm-up run; peak memory is torch.cuda.max_memory_allocated over the run, weights included.
Timings never go into a test; compare ratios measured in the same run.
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
import torch.nn.functional as F  # noqa: E402

from ugd_core import SamplerConfig, make_guide, sample  # noqa: E402
from ugd_sd import StableDiffusionBackbone, StableDiffusionXLBackbone  # noqa: E402
from ugd_kit.testing import tiny_clip_tokenizer  # noqa: E402
from ugd_sd.testing import tiny_stable_diffusion_components, tiny_stable_diffusion_xl_components  # noqa: E402

# ---- exact configs, typed in from the public config files -----------------------------------------
# stable-diffusion-v1-5/stable-diffusion-v1-5: unet/config.json (859,520,964 parameters)
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
)
# stable-diffusion-v1-5/stable-diffusion-v1-5: vae/config.json (scaling_factor 0.18215 is the class default)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=512,
)
# stable-diffusion-v1-5/stable-diffusion-v1-5: text_encoder/config.json (CLIP ViT-L/14 text tower)
CLIP_L = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)
# stabilityai/stable-diffusion-xl-base-1.0: unet/config.json (2,567,463,684 parameters)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
    cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
# stabilityai/stable-diffusion-xl-base-1.0: vae/config.json
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
# stabilityai/stable-diffusion-xl-base-1.0: text_encoder_2/config.json (OpenCLIP ViT-bigG/14 text tower)
CLIP_BIGG = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
)
# the scheduler every SD / SDXL release ships (scheduler/scheduler_config.json)
SD_SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES: dict[str, dict[str, Any]] = {
    "unguided": dict(),
    "forward": dict(forward_strength=1.0),
    "forward+backward (m=5)": dict(forward_strength=1.0, backward_steps=5, backward_lr=0.1),
    "fwd+bwd (m=5)+rec (k=3)": dict(forward_strength=1.0, backward_steps=5, backward_lr=0.1, recurrence=3),
}
MEMORY_KNOBS = dict(grad_checkpointing=True, vae_slicing=True, vae_tiling=True)
CFG_SCALE = 7.5


def build(model: str, tiny: bool, dtype: torch.dtype, device: torch.device) -> StableDiffusionBackbone:
    """Random-weight components in ``dtype`` on ``device``, as a ugd backbone (the pipeline a user
    loads with ``torch_dtype``)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    if tiny:
        c = tiny_stable_diffusion_xl_components() if model == "sdxl" else tiny_stable_diffusion_components()
        for m in (c["unet"], c["vae"], c["text_encoder"], c.get("text_encoder_2")):
            if m is not None:
                m.to(device=device, dtype=dtype)
    else:
        tok = tiny_clip_tokenizer(max_length=77)  # token ids only feed the (untimed) text encoding
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        with torch.device(device):  # random init on the GPU: seconds instead of minutes
            unet = UNet2DConditionModel(**(SDXL_UNET if model == "sdxl" else SD15_UNET)).to(dtype)
            vae = AutoencoderKL(**(SDXL_VAE if model == "sdxl" else SD_VAE)).to(dtype)
            text = CLIPTextModel(CLIPTextConfig(**CLIP_L, **ids)).to(dtype)
            text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG, **ids)).to(dtype) if model == "sdxl" else None
        c = dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=DDIMScheduler(**SD_SCHEDULER))
        if text_2 is not None:
            c.update(text_encoder_2=text_2, tokenizer_2=tok)
    if model == "sdxl":
        return StableDiffusionXLBackbone(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"], c["text_encoder_2"], c["tokenizer_2"], device=device)
    return StableDiffusionBackbone(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"], device=device)


def segmentation_guide(size: int, dtype: torch.dtype, device: torch.device) -> Any:
    """The paper's segmentation guide: DeepLabV3-ResNet50 (random weights), per-pixel cross-entropy
    to a target mask, mean over pixels; images cast to the network's dtype in preprocess."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.manual_seed(1)
    net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).to(device=device, dtype=dtype)
    mask = torch.zeros(1, size, size, dtype=torch.long, device=device)
    mask[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 15  # a centred 'person' square
    mean = torch.tensor([0.485, 0.456, 0.406], device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device, dtype=dtype).view(1, 3, 1, 1)

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        return ((x.to(dtype) + 1) / 2 - mean) / std

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.float(), target.expand(out.shape[0], -1, -1), reduction="none").mean(dim=(1, 2))

    return make_guide("segmentation", f=lambda x: net(x)["out"], loss=loss, target=mask, preprocess=preprocess, modules=[net])


# ---- the hand-written floor ------------------------------------------------------------------------
def floor_step(bb: StableDiffusionBackbone, guide: Any, cond: Any, z: torch.Tensor, t: torch.Tensor, a: float, a_prev: float,
               knobs: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    """One DDIM step of universal guidance written plainly (CFG, forward, backward, recurrence)."""
    unet, vae = bb.unet, bb.vae
    u_dtype, v_dtype = next(unet.parameters()).dtype, next(vae.parameters()).dtype
    s = knobs.get("forward_strength", 0.0) * math.sqrt(1 - a)
    m, lr, k = knobs.get("backward_steps", 0), knobs.get("backward_lr", 0.1), knobs.get("recurrence", 1)

    def eps_of(z: torch.Tensor) -> torch.Tensor:
        zin = torch.cat([z, z]).to(u_dtype)
        out = unet(zin, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added or None).sample
        e_u, e_c = out.chunk(2)
        return (e_u + CFG_SCALE * (e_c - e_u)).float()

    def image(x0: torch.Tensor) -> torch.Tensor:
        return vae.decode((x0 / vae.config.scaling_factor).to(v_dtype)).sample.float()

    def seg_loss(img: torch.Tensor) -> torch.Tensor:
        return guide.loss(guide.f(guide.preprocess(img)), guide.target).sum()

    for n in range(k):
        if s > 0:
            zg = z.detach().requires_grad_(True)
            with torch.enable_grad():
                eps = eps_of(zg)
                x0 = (zg - math.sqrt(1 - a) * eps) / math.sqrt(a)
                (g,) = torch.autograd.grad(seg_loss(image(x0)), zg)
            eps = eps.detach() + s * g
        else:
            with torch.no_grad():
                eps = eps_of(z)
        x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if m > 0:
            delta = torch.zeros_like(x0, requires_grad=True)
            opt = torch.optim.SGD([delta], lr=lr)
            for _ in range(m):
                with torch.enable_grad():
                    (delta.grad,) = torch.autograd.grad(seg_loss(image(x0 + delta)), delta)
                opt.step()
            eps = eps - math.sqrt(a / (1 - a)) * delta.detach()
            x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        z_prev = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        if n < k - 1:
            noise = torch.randn(z.shape, generator=gen, device=z.device)
            z = math.sqrt(a / a_prev) * z_prev + math.sqrt(1 - a / a_prev) * noise
    return z_prev.detach()


def floor_run(bb: StableDiffusionBackbone, guide: Any, knobs: dict[str, Any], steps: int, on_step: Callable[[], None]) -> torch.Tensor:
    """Text encoding, the chain, the final decode: what ``sample()`` does, by hand."""
    cond = bb.condition("a photo of a person", None, 1, CFG_SCALE)
    sched = bb.scheduler
    sched.set_timesteps(steps, device=bb.device)
    acp = sched.alphas_cumprod.tolist()
    ts = sched.timesteps
    gen = torch.Generator(device=bb.device).manual_seed(0)
    z = torch.randn((1, *bb.sample_shape), generator=gen, device=bb.device)
    for i in range(len(ts)):
        t_int = int(ts[i])
        a_prev = acp[int(ts[i + 1])] if i + 1 < len(ts) else float(sched.final_alpha_cumprod)
        z = floor_step(bb, guide, cond, z, ts[i], acp[t_int], a_prev, knobs, gen)
        on_step()
    with torch.no_grad():
        return bb.vae.decode((z / bb.vae.config.scaling_factor).to(next(bb.vae.parameters()).dtype)).sample.float().clamp(-1, 1)


def ugd_run(bb: StableDiffusionBackbone, guide: Any, knobs: dict[str, Any], steps: int, on_step: Callable[[], None], memory: dict[str, Any]) -> torch.Tensor:
    cfg = SamplerConfig(num_steps=steps, cfg_scale=CFG_SCALE, **knobs, **memory)
    return sample(bb, guide if knobs else None, cfg, num_images=1, seed=0, prompt="a photo of a person", progress=lambda i, n: on_step()).images


# ---- timing ----------------------------------------------------------------------------------------
@dataclass
class Cell(CostCell):
    knobs: bool  # the memory knobs on (grad_checkpointing, vae_slicing, attention_slicing)


def main(argv: list[str] | None = None) -> list[Cell]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=("auto", "full", "tiny"), default="auto", help="auto: full configs on CUDA, tiny on CPU")
    p.add_argument("--models", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    p.add_argument("--dtypes", default="fp32,fp16,bf16")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated names from: " + "; ".join(MODES))
    p.add_argument("--sdxl-dtypes", default="fp16,bf16", help="dtypes for sdxl (its fp32 cells are slow)")
    p.add_argument("--knobs", default="off,on", help="memory knobs: off, on or both")
    p.add_argument("--steps", type=int, default=4, help="DDIM steps per timed run (the first is not timed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=0, help="skip cells once this many seconds have passed (0 = none)")
    p.add_argument("--json", default="", help="also write every cell to this JSON file")
    args = p.parse_args(argv)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # its cast warnings would break the table
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tiny = args.size == "tiny" or (args.size == "auto" and device.type != "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    start = time.perf_counter()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            sys.exit(f"unknown mode {m!r}; use: {', '.join(MODES)}")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"machine: {gpu}, torch {torch.__version__}, {'tiny' if tiny else 'full-size'} configs, batch 1, CFG {CFG_SCALE}, "
          f"{args.steps} DDIM steps per run (first untimed), threads {args.threads}\n", flush=True)
    header = "| model | dtype | memory knobs | mode | ugd s/step | floor s/step | ratio | ugd peak GB | floor peak GB | finite |"
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    cells: list[Cell] = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        dtypes = args.sdxl_dtypes if model == "sdxl" else args.dtypes
        for dname in [d.strip() for d in dtypes.split(",") if d.strip()]:
            if args.budget_s and time.perf_counter() - start > args.budget_s:
                print(f"(budget of {args.budget_s:.0f} s spent: {model} {dname} and later cells skipped)", flush=True)
                continue
            bb = build(model, tiny, DTYPES[dname], device)
            size = bb.sample_shape[-1] * bb.vae_factor
            guide = segmentation_guide(size, DTYPES[dname], device)
            if model == "sd15" and not tiny and not cells:
                n = lambda mod: sum(q.numel() for q in mod.parameters()) / 1e6  # noqa: E731
                print(f"(SD 1.5 parameters: UNet {n(bb.unet):.1f}M, VAE {n(bb.vae):.1f}M, text encoder {n(bb.text_encoder):.1f}M)", flush=True)
            for knobs_on in [k.strip() == "on" for k in args.knobs.split(",") if k.strip()]:
                memory = MEMORY_KNOBS if knobs_on else {k: False for k in MEMORY_KNOBS}
                # the floor runs the very same modules with the same diffusers switches (and, for SDXL in
                # fp16, the VAE upcast to fp32 that diffusers' SDXL pipeline applies: config.force_upcast)
                bb.configure(SamplerConfig(**memory))
                warm = MODES["forward+backward (m=5)"]
                ugd_run(bb, guide, warm, 2, lambda: None, memory)
                floor_run(bb, guide, warm, 2, lambda: None)
                for mode in modes:
                    if args.budget_s and time.perf_counter() - start > args.budget_s:
                        break
                    knobs = MODES[mode]
                    u, up, uf = timed(device, lambda cb: ugd_run(bb, guide, knobs, args.steps, cb, memory))
                    uf = bool(torch.isfinite(uf).all())
                    f, fp, ff = timed(device, lambda cb: floor_run(bb, guide, knobs, args.steps, cb))
                    ff = bool(torch.isfinite(ff).all())
                    cell = Cell(model, dname, mode, u, f, up, fp, uf and ff, knobs=knobs_on)
                    cells.append(cell)
                    print(f"| {model} | {dname} | {'on' if knobs_on else 'off'} | {mode} | {u:.4f} | {f:.4f} | {u / f:.3f} | "
                          f"{gigabytes(up)} | {gigabytes(fp)} | {'yes' if cell.finite else 'NO'} |", flush=True)
            del bb, guide
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print()
    return finish(cells, start, args.json)


if __name__ == "__main__":
    main()
