"""Per-step cost of the sampler's modes on the tiny Stable Diffusion components.

    .venv/bin/python benchmarks/step_cost.py [--threads 1] [--repeats 3] [--batch 2] [--dtype bf16] [--low-memory]

Prints a markdown table: seconds per step (median of repeats, after a warm-up),
the ratio to an unguided step, and denoiser forward/backward passes per step.
Timings are noisy on shared machines; compare the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ugd_core import SamplerConfig, make_guide, sample  # noqa: E402
from ugd_sd.testing import tiny_stable_diffusion  # noqa: E402

MODES = {
    "unguided": dict(),
    "forward": dict(forward_strength=1.0),
    "backward (m=5)": dict(backward_steps=5, backward_lr=0.1),
    "forward + backward (m=5)": dict(forward_strength=1.0, backward_steps=5, backward_lr=0.1),
    "recurrence (k=3), unguided": dict(recurrence=3),
    "forward + backward (m=5) + recurrence (k=3)": dict(forward_strength=1.0, backward_steps=5, backward_lr=0.1, recurrence=3),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="the dtype knob")
    p.add_argument("--low-memory", action="store_true", help="the memory knobs of the low-memory preset")
    args = p.parse_args()
    memory = dict(dtype=args.dtype)
    if args.low_memory:
        memory.update(grad_checkpointing=True, vae_slicing=True, vae_tiling=True)
    torch.set_num_threads(args.threads)
    backbone = tiny_stable_diffusion()
    guide = make_guide("brightness", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=0.3)
    rows = []
    for name, knobs in MODES.items():
        cfg = SamplerConfig(num_steps=args.steps, cfg_scale=7.5, **knobs, **memory)
        sample(backbone, guide, cfg, num_images=args.batch, seed=0, prompt="a photo")  # warm-up
        times, stats = [], None
        for r in range(args.repeats):
            t0 = time.perf_counter()
            out = sample(backbone, guide, cfg, num_images=args.batch, seed=r, prompt="a photo")
            times.append((time.perf_counter() - t0) / args.steps)
            stats = out.stats
        rows.append((name, statistics.median(times), stats.denoiser_forward / args.steps, stats.denoiser_backward / args.steps))
    base = rows[0][1]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"batch {args.batch}, {args.steps} steps, median of {args.repeats}, dtype {args.dtype}"
          f"{', memory knobs on' if args.low_memory else ''}\n")
    print("| mode | s/step | × unguided | denoiser fwd / bwd per step |")
    print("|---|---|---|---|")
    for name, sec, fwd, bwd in rows:
        print(f"| {name} | {sec:.4f} | {sec / base:.2f} | {fwd:.0f} / {bwd:.0f} |")


if __name__ == "__main__":
    main()
