"""Per-step cost and peak memory of ugd on the rectified-flow backbones (SD3, FLUX.1) against a hand-written floor.

    python benchmarks/flow_cost.py                          # CPU: the tiny configs (CUDA: see below)
    python benchmarks/flow_cost.py --models flux --modes forward --steps 4 --dtype bf16

Both sides run the same backbone modules (random weights: ``ugd_sd.testing.tiny_sd3_pipeline`` and
``tiny_flux_pipeline``, nothing downloaded), the same guide (a cheap differentiable one: the squared
distance of the decoded image's mean brightness to 0.3) and the same passes per step:

    unguided    one transformer pass (SD3: the batched CFG pair; FLUX.1-dev: its guidance embedding), no autograd
    forward     + VAE decode of x0_hat, guide forward/backward, gradient back through the VAE and the
                transformer to z_t, added to eps (forward_strength 1, constant schedule, DDIM eta = 0)

The floor is that step written plainly with the backbone's own callables (``floor_step`` below):
``eps`` (the flow as an eps-model, eps = x + (1 - sigma) v: ugd_kit/flow.py), ``x0_at_pure_noise`` at
the chain's first step (sigma = 1, a_t = 0), ``decode``, and the DDIM update on the chain of
``NoiseSchedule.from_scheduler``. Its final latents are compared with ugd's ("same result"). Time per
step is measured between step ends (CUDA events on GPU), after the first step of the run and after a
warm-up run; peak memory is torch.cuda.max_memory_allocated over the run, weights included.
Timings never go into a test; compare ratios measured in the same run.

Full-size shapes (stabilityai/stable-diffusion-3.5-medium, black-forest-labs/FLUX.1-dev at 1024x1024)
are not typed in yet: ``--size full`` (the default on CUDA) stops with an error and GPU cost stays
unmeasured; ``--size tiny`` runs the tiny configs on any device.
"""

from __future__ import annotations

import argparse
import json
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
from step_timing import timed  # noqa: E402

from ugd_core import SamplerConfig, make_guide, sample  # noqa: E402
from ugd_core.sampler import NoiseSchedule  # noqa: E402
from ugd_sd.flow import FluxBackbone, StableDiffusion3Backbone, _FlowPipelineBackbone  # noqa: E402
from ugd_sd.testing import tiny_flux_pipeline, tiny_sd3_pipeline  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODELS = ("sd3", "flux")
MODES: dict[str, dict[str, Any]] = {
    "unguided": dict(),
    "forward": dict(forward_strength=1.0, forward_schedule="constant", eta=0.0),
}
CFG_SCALE = 7.5  # SamplerConfig's default; SD3 batches the CFG pair, FLUX.1-dev ignores it (guidance embedding 3.5)
PROMPT = "a photo of a cat"
SEQ = 16  # max_sequence_length of the tiny text encoders
SAME_TOL = {"fp32": 1e-4, "bf16": 5e-2}  # max |ugd - floor| of the final latents that counts as the same result
FULL_SIZE_MISSING = ("full-size configs (stabilityai/stable-diffusion-3.5-medium, black-forest-labs/FLUX.1-dev) are not yet "
                     "typed in; use --size tiny")


def build(model: str, tiny: bool, dtype: torch.dtype, device: torch.device) -> _FlowPipelineBackbone:
    """A random-weight pipeline in ``dtype`` on ``device``, as a ugd backbone (the pipeline a user loads
    with ``torch_dtype``)."""
    if not tiny:
        raise NotImplementedError(FULL_SIZE_MISSING)
    if model == "sd3":
        pipe = tiny_sd3_pipeline(0).to(device=device, dtype=dtype)
        return StableDiffusion3Backbone.from_pipeline(pipe, max_sequence_length=SEQ, device=device)
    pipe = tiny_flux_pipeline(0).to(device=device, dtype=dtype)  # FLUX.1-dev-like: guidance_embeds
    return FluxBackbone.from_pipeline(pipe, height=16, width=16, max_sequence_length=SEQ, device=device)


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
class Cell:
    model: str
    dtype: str
    mode: str
    ugd_s: float
    floor_s: float
    ugd_peak_gb: float | None
    floor_peak_gb: float | None
    finite: bool
    max_diff: float  # max |ugd - floor| of the final latents
    same: bool


def main(argv: list[str] | None = None) -> list[Cell]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=("auto", "full", "tiny"), default="auto", help="auto: full configs on CUDA, tiny on CPU")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--steps", type=int, default=4, help="DDIM steps per timed run (the first is not timed); at least 2")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="", help="also write every cell to this JSON file")
    args = p.parse_args(argv)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # its warnings would break the table
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tiny = args.size == "tiny" or (args.size == "auto" and device.type != "cuda")
    if not tiny:
        sys.exit(f"flow_cost: {FULL_SIZE_MISSING} (GPU cost at full size: unmeasured)")
    if args.steps < 2:
        sys.exit("--steps must be at least 2 (the first step is not timed)")
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
    print(f"machine: {gpu}, torch {torch.__version__}, tiny configs, {args.dtype}, batch 1, CFG {CFG_SCALE} (SD3; FLUX.1-dev: "
          f"guidance embedding 3.5), {args.steps} DDIM steps per run (first untimed), threads {args.threads}\n", flush=True)
    print("| model | dtype | mode | ugd s/step | floor s/step | ratio | ugd peak GB | floor peak GB | finite | same result |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    cells: list[Cell] = []
    guide = bright_guide()
    for model in models:
        bb = build(model, tiny, DTYPES[args.dtype], device)
        bb.configure(SamplerConfig())  # the state sample() leaves the modules in, for the floor as well
        z0 = torch.randn((1, *bb.sample_shape), generator=torch.Generator().manual_seed(0)).to(device)
        ugd_run(bb, guide, MODES["forward"], 2, z0, lambda: None)  # warm-up
        floor_run(bb, guide, MODES["forward"], 2, z0, lambda: None)
        for mode in modes:
            knobs = MODES[mode]
            u, up, zu = timed(device, lambda cb: ugd_run(bb, guide, knobs, args.steps, z0, cb))
            f, fp, zf = timed(device, lambda cb: floor_run(bb, guide, knobs, args.steps, z0, cb))
            diff = (zu.float() - zf.float()).abs().max().item()
            finite = bool(torch.isfinite(zu).all() and torch.isfinite(zf).all())
            cell = Cell(model, args.dtype, mode, u, f, up, fp, finite, diff, diff <= SAME_TOL[args.dtype])
            cells.append(cell)
            gb = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
            print(f"| {model} | {args.dtype} | {mode} | {u:.4f} | {f:.4f} | {u / f:.3f} | {gb(up)} | {gb(fp)} | "
                  f"{'yes' if finite else 'NO'} | {'yes' if cell.same else 'NO'} (max diff {diff:.1e}) |", flush=True)
        del bb
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\nGPU cost at full size (SD3.5-medium, FLUX.1-dev at 1024x1024): unmeasured (their configs are not typed in yet)")
    print(f"total wall time {time.perf_counter() - start:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([c.__dict__ for c in cells], fh, indent=1)
    return cells


if __name__ == "__main__":
    main()
