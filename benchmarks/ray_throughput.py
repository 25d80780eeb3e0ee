"""Images per second in-process vs on Ray with 1, 2, ... workers, the overhead per item, projected scaling.

    .venv/bin/python benchmarks/ray_throughput.py [--backbone digits] [--guide digit:label=3] \
        [--steps 10] [--num-images 8] [--batch-size 2] [--workers 1,2] [--threads 1]

Every mode samples the same RunSpec into a fresh folder (the images are the same
bytes; the script checks). Reported per mode: wall time, overall items/s
(start-up included), time to the first written item (cluster connect + actor
start + model build + one batch), steady items/s (between the first and the last
written item), and the overhead per item against the in-process steady rate. The
driver's own cost per item (receiving + writing the PNG and sidecar) bounds how
far more workers can help: projected items/s = min(W x one worker's steady rate,
1 / driver cost per item). Timings on shared machines are noisy; the local Ray
cluster gets exactly ``max(workers)`` CPUs, and every worker and the in-process
run use ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from cli.run import RunSpec, build, generate_batch, save_image  # noqa: E402


def in_process(spec: RunSpec, out: Path) -> dict:
    t0 = time.perf_counter()
    built = build(spec)
    t_built = time.perf_counter()
    stamps, write_times = [], []
    for seeds in spec.batches():
        for item in generate_batch(spec, seeds, built):
            w0 = time.perf_counter()
            save_image(item, out)
            write_times.append(time.perf_counter() - w0)
            stamps.append(time.perf_counter())
    return dict(wall=stamps[-1] - t0, build=t_built - t0, stamps=stamps, start=t0, write=statistics.median(write_times))


def on_ray(spec: RunSpec, out: Path, workers: int, threads: int) -> dict:
    from cli.distributed import generate_on_ray

    stamps: list[float] = []
    t0 = time.perf_counter()
    generate_on_ray(spec, out, num_workers=workers, num_cpus_per_worker=threads, on_item=lambda p, s: stamps.append(time.perf_counter()))
    return dict(wall=time.perf_counter() - t0, stamps=stamps, start=t0)


def steady_rate(stamps: list[float], skip: int) -> float:
    """Items/s after the first ``skip`` items landed (start-up excluded); nan if too few items."""
    if len(stamps) <= skip or skip < 1:
        return float("nan")
    return (len(stamps) - skip) / max(1e-9, stamps[-1] - stamps[skip - 1])


def same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.png"))
    return names == sorted(p.name for p in b.glob("*.png")) and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="digits")
    p.add_argument("--guide", action="append", default=None, help="repeatable; default digit:label=3")
    p.add_argument("--preset", default=None)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts")
    p.add_argument("--threads", type=int, default=1, help="torch threads in-process and per worker (= CPUs per worker)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    guides = args.guide if args.guide is not None else ["digit:label=3"]
    spec = RunSpec(args.backbone, guides, args.preset, dict(num_steps=args.steps), None, None, 0, args.num_images, args.batch_size, "cpu")
    counts = [int(w) for w in args.workers.split(",") if w]
    n = args.num_images
    root = Path(tempfile.mkdtemp(prefix="ugd-ray-throughput-"))
    try:
        import ray

        build(spec)  # warm-up: imports and weights in the page cache
        here = in_process(spec, root / "here")
        base_steady = steady_rate(here["stamps"], args.batch_size)
        t0 = time.perf_counter()
        ray.init(num_cpus=max(counts) * args.threads, include_dashboard=False, log_to_driver=False)
        connect_s = time.perf_counter() - t0
        runs = {}
        for w in counts:
            runs[w] = on_ray(spec, root / f"ray{w}", w, args.threads)
            runs[w]["same"] = same_bytes(root / "here", root / f"ray{w}")
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} thread(s) per worker; spec: {args.backbone} {' '.join(guides)} preset={args.preset or 'ugd'}, "
        f"{args.steps} steps, {n} images in batches of {args.batch_size}; local Ray cluster start: {connect_s:.1f} s\n"
    )
    print("| mode | wall s | items/s overall | first item s | items/s steady | overhead per item ms | same bytes |")
    print("|---|---|---|---|---|---|---|")
    first = here["stamps"][0] - here["start"]
    print(f"| in-process | {here['wall']:.1f} | {n / here['wall']:.3f} | {first:.1f} | {base_steady:.3f} | 0 | - |")
    steady = {}
    for w, r in runs.items():
        steady[w] = steady_rate(r["stamps"], args.batch_size * w)  # after every worker's first batch
        overhead = f"{(1 / steady[w] - 1 / base_steady) * 1000:.0f}" if w == 1 and steady[w] == steady[w] else "-"
        print(
            f"| Ray, {w} worker{'s' * (w > 1)} | {r['wall']:.1f} | {n / r['wall']:.3f} | {r['stamps'][0] - r['start']:.1f} | "
            f"{steady[w]:.3f} | {overhead} | {'yes' if r['same'] else 'NO'} |"
        )
    one = steady[min(counts)] / min(counts)
    ceiling = 1 / here["write"]
    print(f"\ndriver cost per item (PNG + sidecar write): {here['write'] * 1000:.1f} ms -> ceiling {ceiling:.0f} items/s\n")
    print("| workers | projected items/s | speed-up vs in-process |")
    print("|---|---|---|")
    for w in (1, 2, 4, 8, 16, 32, 64):
        proj = min(w * one, ceiling)
        print(f"| {w} | {proj:.3f} | {proj / base_steady:.1f}x |")


if __name__ == "__main__":
    main()
