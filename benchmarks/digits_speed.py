"""Samples per second of the digits world, and what each way of making a pass cheaper buys (issue 22).

    .venv/bin/python benchmarks/digits_speed.py [--threads 2] [--batch 16] [--repeats 5] [--ratio-steps 10]
        [--shipped-repeats 3] [--steps N] [--ratio-modes digits] [--only channels_last,threads] [--compile] [--omp] [--quick]

Prints two markdown tables.

1. **Samples/s as shipped**: unguided, the ``digits`` preset and the digits backbone's registered default
   preset (read from the registry, so it follows the default), each resolved as ``ugd generate`` resolves
   it (the preset's steps, else the backbone's ``default_steps``), ``--batch`` images sampled as
   ``ugd generate -n BATCH`` samples them (batches of the CLI's default size, side by side in its lanes).
2. **Each option's ratio**: time with the option / time without it, for each mode, from variants
   interleaved within every repeat of this one process (median over repeats), in wall-clock time and
   in this process's CPU time (``time.process_time``, less sensitive to neighbours on a shared machine).
   "identical" says whether the images are bit-identical to the baseline's (else the max difference):
   an option that is not must be named in the run's record (``channels_last`` is a sampler knob).

Options: ``lanes`` (the ``--batch`` images as 2 or 4 batches sampled side by side, each lane on its share of
the threads: ``cli.lanes``), ``channels_last`` (the knob), ``inference_mode`` (unguided: the whole run under
``torch.inference_mode`` instead of the sampler's ``no_grad``), ``threads=1``, ``batch=1/4/64`` (per
sample), ``bf16`` (the ``dtype`` knob), ``no_onednn`` (oneDNN off: what it already buys), ``--compile``
(``torch.compile`` of the UNet, inductor; its compile seconds printed, cached by inductor under
``/tmp/torchinductor_$USER``), ``--omp`` (``OMP_WAIT_POLICY=ACTIVE`` vs ``PASSIVE``, two subprocesses
interleaved: the variable is read only when torch loads). Timing is never a test assertion; the machine,
threads and load average are printed with the tables because on a shared machine they move every number.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ugd_core  # noqa: E402,F401 - before torch: sets OMP_WAIT_POLICY (see ugd_core/__init__.py)
import torch  # noqa: E402

from cli.lanes import in_lanes, lane_plan  # noqa: E402
from cli.run import RunSpec, build_guide, resolve_config  # noqa: E402
from cli.spec import DEFAULT_BATCH_SIZE  # noqa: E402
from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core.backbones import cast_module  # noqa: E402
from ugd_core.registry import get_registry  # noqa: E402

GUIDE = "digit-robust:label=7"  # the README's guide
FP32_WEIGHTS: dict[str, Any] = {}  # the UNet's own weights, restored after a dtype variant
DEFAULT_OPTIONS = "lanes,channels_last,inference_mode,threads,batch,bf16"  # no_onednn on request: 8-30x slower runs


@dataclass
class Variant:
    """One way to run a mode: config changes, a context around ``sample()``, a batch size, a thread count."""

    name: str
    knobs: dict[str, Any] = field(default_factory=dict)
    context: Callable[[], Any] = nullcontext
    batch: int | None = None
    threads: int | None = None
    unet: Any = None  # a replacement denoiser module (compiled)
    lanes: int = 1  # the images split into this many batches, sampled side by side (cli.lanes)


@contextmanager
def swapped_unet(backbone: Any, unet: Any) -> Iterator[None]:
    """Run with ``backbone.unet`` replaced (a compiled module), restoring it afterwards."""
    if unet is None:
        yield
        return
    before, backbone.unet = backbone.unet, unet
    try:
        yield
    finally:
        backbone.unet = before


def no_onednn() -> Any:
    return torch.backends.mkldnn.flags(enabled=False)


def run_once(backbone: Any, guide: Any, cfg: SamplerConfig, v: Variant, batch: int, threads: int, seed0: int) -> tuple[Any, float, float, Any]:
    """(images, wall seconds per sample, CPU seconds per sample, stats) of one ``sample()`` call."""
    n = v.batch or batch
    seeds = list(range(seed0, seed0 + n))
    size = -(-n // v.lanes)
    batches = [seeds[i : i + size] for i in range(0, n, size)]
    torch.set_num_threads(v.threads or max(1, threads // v.lanes))
    cfg = cfg.updated(**v.knobs) if v.knobs else cfg
    outs: dict[int, Any] = {}
    with swapped_unet(backbone, v.unet), v.context():
        w0, c0 = time.perf_counter(), time.process_time()  # process_time: every lane's CPU time
        in_lanes(batches, v.lanes, lambda s, step: sample(backbone, guide, cfg, num_images=len(s), seed=s), outs.__setitem__, lambda d, t: None)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    torch.set_num_threads(threads)
    out = outs[0]
    out.images = torch.cat([outs[k].images for k in range(len(batches))])
    if "dtype" in v.knobs:  # a cast down and back up would keep rounded weights: reload the fp32 ones
        cast_module(backbone.unet, torch.float32)
        backbone.unet.load_state_dict(FP32_WEIGHTS)
    return out.images.clone(), wall / n, cpu / n, out.stats


def omp_policy_ratio(args: argparse.Namespace) -> str:
    """Wall time of the same small guided job in subprocesses with OMP_WAIT_POLICY=ACTIVE and PASSIVE, interleaved."""
    times: dict[str, list[float]] = {"ACTIVE": [], "PASSIVE": []}
    code = (
        "import time, torch, ugd_core; from ugd_core import SamplerConfig, sample; from ugd_core.registry import get_registry;"
        f"torch.set_num_threads({args.threads}); r = get_registry(); b = r.build('backbone', 'digits', {{}});"
        f"g = r.build('guide', 'digit-robust', {{'label': 7}}); c = SamplerConfig.from_dict(dict(r.get('preset', 'digits').settings, num_steps=3));"
        f"sample(b, g, c, num_images={args.batch}, seed=0); t = time.perf_counter(); sample(b, g, c, num_images={args.batch}, seed=0);"
        "print(time.perf_counter() - t)"
    )
    for _ in range(max(2, args.repeats // 2)):
        for policy in times:
            env = dict(os.environ, OMP_WAIT_POLICY=policy)
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            times[policy].append(float(out.stdout.strip().splitlines()[-1]))
    a, p = statistics.median(times["ACTIVE"]), statistics.median(times["PASSIVE"])
    return (f"OMP_WAIT_POLICY at {args.threads} threads, batch {args.batch}, `digits` 3 steps, median of {len(times['ACTIVE'])} "
            f"subprocess pairs: ACTIVE {a:.2f} s, PASSIVE {p:.2f} s, ratio PASSIVE / ACTIVE {p / a:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats of table 2")
    p.add_argument("--shipped-repeats", type=int, default=3, help="repeats of table 1 (full-length runs; 0 = no table 1)")
    p.add_argument("--steps", type=int, default=None, help="override every mode's step count (default: as shipped)")
    p.add_argument("--ratio-steps", type=int, default=10, help="steps of the runs of table 2 (a ratio per pass hardly depends on it)")
    p.add_argument("--ratio-modes", default="", help="comma-separated modes of table 2 (unguided, digits, default; default: all)")
    p.add_argument("--quick", action="store_true", help="5 steps, 3 repeats: ratios only, in a minute or two")
    p.add_argument("--only", default="", help=f"comma-separated options of table 2 (default: {DEFAULT_OPTIONS}; also no_onednn)")
    p.add_argument("--compile", action="store_true", help="add torch.compile of the UNet (slow to compile the first time)")
    p.add_argument("--omp", action="store_true", help="add the OMP_WAIT_POLICY comparison (subprocesses)")
    args = p.parse_args()
    if args.quick:
        args.steps, args.ratio_steps, args.repeats, args.shipped_repeats = args.steps or 5, min(args.ratio_steps, 5), min(args.repeats, 3), 1
    torch.set_num_threads(args.threads)
    reg = get_registry()
    backbone = reg.build("backbone", "digits", {})
    FP32_WEIGHTS.update({k: t.clone() for k, t in backbone.unet.state_dict().items()})
    guide = build_guide(GUIDE, reg, "cpu")[0]
    default = reg.get("backbone", "digits").default_preset or "auto"
    modes: dict[str, tuple[Any, SamplerConfig]] = {}
    for label, preset, g in (("unguided", None, None), ("digits", "digits", guide), (f"default ({default})", default, guide)):
        cfg, _ = resolve_config(RunSpec(guides=[GUIDE] if g is not None else [], preset=preset), reg)
        modes[label] = (g, cfg.updated(num_steps=args.steps) if args.steps else cfg)

    options: dict[str, list[Variant]] = {
        "channels_last": [Variant("channels_last", dict(channels_last=True))],
        "inference_mode": [Variant("inference_mode", context=torch.inference_mode)],
        "threads": [Variant("threads=1", threads=1)] if args.threads > 1 else [],
        "lanes": [Variant(f"lanes={k} (batch {args.batch // k} each, {max(1, args.threads // k)} thread)", lanes=k)
                  for k in (2, 4) if k <= args.batch and k <= 2 * args.threads],
        "batch": [Variant(f"batch={b}", batch=b) for b in (1, 4, 64) if b != args.batch],
        "bf16": [Variant("dtype=bf16", dict(dtype="bf16"))],
        "no_onednn": [Variant("oneDNN off", context=no_onednn)],
    }
    options = {k: v for k, v in options.items() if k in (args.only or DEFAULT_OPTIONS).split(",")}
    compile_note = ""
    if args.compile:
        t0 = time.perf_counter()
        compiled = torch.compile(backbone.unet, dynamic=False)
        for label, (g, cfg) in modes.items():  # compile every graph the timed runs need (grad and no-grad)
            with swapped_unet(backbone, compiled):
                sample(backbone, g, cfg.updated(num_steps=2), num_images=args.batch, seed=0)
        compile_note = f"torch.compile: first calls (tracing + inductor; cached under /tmp/torchinductor_*) {time.perf_counter() - t0:.1f} s"
        options["compile"] = [Variant("torch.compile", unet=compiled)]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {args.threads} (interop {torch.get_num_interop_threads()}), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"batch {args.batch}; load average at start {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")

    # 1. samples/s as shipped
    # as `ugd generate -n BATCH` runs: batches of the CLI's default size, side by side in its lanes
    lanes, _ = lane_plan(None, -(-args.batch // DEFAULT_BATCH_SIZE), args.threads, "cpu")
    shipped = Variant("shipped", lanes=lanes)
    if args.shipped_repeats < 1:
        modes_shipped: dict[str, tuple[Any, SamplerConfig]] = {}
    else:
        modes_shipped = modes
    if modes_shipped:
        print(f"as shipped (as `ugd generate -n {args.batch}`: batches of {DEFAULT_BATCH_SIZE} in {lanes} lane(s)), "
              f"median of {args.shipped_repeats} runs after a warm-up\n")
        print("| mode | steps | samples/s | s/sample | denoiser fwd / bwd per chain |")
        print("|---|---|---|---|---|")
    for label, (g, cfg) in modes_shipped.items():
        run_once(backbone, g, cfg, shipped, args.batch, args.threads, 0)
        walls = []
        for r in range(args.shipped_repeats):
            _, w, _, st = run_once(backbone, g, cfg, shipped, args.batch, args.threads, 1000 * (r + 1))
            walls.append(w)
        med = statistics.median(walls)
        print(f"| {label} | {cfg.num_steps} | {1 / med:.2f} | {med:.3f} | {st.denoiser_forward} / {st.denoiser_backward} |", flush=True)
    if modes_shipped:
        print(f"\nload average after table 1: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")

    # 2. each option's ratio, variants interleaved
    variants = [v for vs in options.values() for v in vs]
    print(f"{args.ratio_steps} steps per run; ratio = time per sample with the option / without, medians of {args.repeats} interleaved repeats\n")
    print("| option | mode | wall ratio | CPU ratio | identical to baseline |")
    print("|---|---|---|---|---|")
    for label, (g, cfg) in modes.items():
        if args.ratio_modes and label.split()[0] not in args.ratio_modes.split(","):
            continue
        # fp32 explicitly: dtype=auto keeps whatever dtype the previous variant (bf16) left the modules in
        cfg = cfg.updated(num_steps=args.ratio_steps, dtype="fp32")
        todo = [v for v in variants if not (v.name == "inference_mode" and g is not None)]  # guided passes need autograd
        base_img = run_once(backbone, g, cfg, Variant("baseline"), args.batch, args.threads, 0)[0]
        same: dict[str, str] = {}
        for v in todo:
            img = run_once(backbone, g, cfg, v, args.batch, args.threads, 0)[0]
            if v.batch is None:
                same[v.name] = "yes" if torch.equal(img, base_img) else f"no (max diff {(img - base_img).abs().max():.1e})"
            else:  # a different batch: compare the images both batches drew (the first min(n, batch) seeds)
                k = min(len(img), len(base_img))
                same[v.name] = "yes" if torch.equal(img[:k], base_img[:k]) else f"no (max diff {(img[:k] - base_img[:k]).abs().max():.1e})"
        wall: dict[str, list[float]] = {v.name: [] for v in [Variant("baseline"), *todo]}
        cpu: dict[str, list[float]] = {k: [] for k in wall}
        for r in range(args.repeats):
            for v in [Variant("baseline"), *todo]:
                _, w, c, _ = run_once(backbone, g, cfg, v, args.batch, args.threads, 1000 * (r + 1))
                wall[v.name].append(w)
                cpu[v.name].append(c)
        bw, bc = statistics.median(wall["baseline"]), statistics.median(cpu["baseline"])
        for v in todo:
            print(f"| {v.name} | {label} | {statistics.median(wall[v.name]) / bw:.2f} | {statistics.median(cpu[v.name]) / bc:.2f} | {same[v.name]} |", flush=True)
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if compile_note:
        print(compile_note)
    if args.omp:
        print(omp_policy_ratio(args))


if __name__ == "__main__":
    main()
