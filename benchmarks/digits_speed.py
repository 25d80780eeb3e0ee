"""Seconds per guided digits sample: the speed goal of the digits world.

    .venv/bin/python benchmarks/digits_speed.py [--threads 2] [--batches 1,4,16] [--repeats 3]

Times ``sample()`` on the ``digits`` backbone with label guidance, 50 DDIM steps,
forward + backward (m=3) guidance and no recurrence (k=1), the digits bench's
default knobs. Prints a markdown table of seconds per image (median of repeats,
after one warm-up) per batch size, next to the unguided cost. Run it on an
otherwise idle machine: timings on a shared one measure the neighbours.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core.registry import get_registry  # noqa: E402
from cli.run import build_guide  # noqa: E402


def main() -> None:
    from ugd_digits.bench import DEFAULT_SETTINGS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    reg = get_registry()
    backbone = reg.build("backbone", "digits", {})
    guide = build_guide("digit:label=7", reg, "cpu")[0]
    modes = {"unguided": (None, {}), "forward + backward (m=3), k=1": (guide, DEFAULT_SETTINGS)}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {args.threads}, {args.steps} steps, median of {args.repeats}\n")
    print("| mode | batch | s/image | denoiser fwd / bwd per chain |")
    print("|---|---|---|---|")
    for name, (g, knobs) in modes.items():
        cfg = SamplerConfig.from_dict(dict(knobs, num_steps=args.steps))
        for batch in (int(b) for b in args.batches.split(",")):
            sample(backbone, g, cfg, num_images=batch, seed=list(range(batch)))  # warm-up
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                out = sample(backbone, g, cfg, num_images=batch, seed=[1000 * (r + 1) + i for i in range(batch)])
                times.append((time.perf_counter() - t0) / batch)
            st = out.stats
            print(f"| {name} | {batch} | {statistics.median(times):.3f} | {st.denoiser_forward} / {st.denoiser_backward} |", flush=True)


if __name__ == "__main__":
    main()
