"""What the default preset costs and does on Stable Diffusion in half precision, at full size.

    python benchmarks/sd_default.py                      # CUDA: SD 1.5 (and SDXL if the budget allows); CPU: tiny configs
    python benchmarks/sd_default.py --models sd15 --steps 20 --scale-steps 10 --json sd_default.json

Nobody can tune guidance on Stable Diffusion here (no weights are reachable offline), so the default is what
a user gets. This script measures, on random-weight components built from the published configs (the same
as benchmarks/sd_cost.py, whose builders it imports), with the paper's segmentation guide:

1. **Cost.** Seconds per image and peak memory of the default (`auto`) against the paper's `ugd` preset and an
   unguided run, the same prompt, seed and step count, one process (ratios, not absolute times, compare runs);
   the denoiser and guide passes each took; and the guide's own loss on the final image (random weights: a
   check that each preset lowers the loss it is given, not a quality measure).
2. **Loss-scale invariance in half precision.** The default's images with the guide's loss multiplied by
   c = 10^-3 and 10^3 against c = 1, and a second c = 1 run as the floor of run-to-run differences. Deterministic
   kernels are asked for (cuDNN, cuBLAS, the plain attention), so a rerun is the same bit for bit;
   ``--fused-attention`` keeps the fused attention kernels, whose backward is not deterministic on CUDA, so the
   rerun shows a GPU's own spread. The CPU tests check this on tiny pipelines; here the UNet and VAE are fp16.

Timings never go into a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # lets cuBLAS run deterministically when asked (part 2)

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sd_cost import CFG_SCALE, MEMORY_KNOBS, build, segmentation_guide  # noqa: E402

from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core.backbones import DTYPES  # noqa: E402
from ugd_core.guidance import guide_loss  # noqa: E402
from ugd_core.presets import PRESETS  # noqa: E402
from ugd_core.testing import loss_scaled  # noqa: E402

PROMPT = "a photo of a person"


def mean_loss(guide: Any, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(guide_loss(guide, images).mean())


def run(bb: Any, guide: Any, preset: str | None, steps: int, memory: dict[str, bool], seed: int = 0) -> tuple[Any, float, float | None]:
    """One image: (result, wall seconds, peak GB on CUDA)."""
    knobs = dict(PRESETS[preset][1]) if preset else {}
    cfg = SamplerConfig(**dict(knobs, num_steps=steps, cfg_scale=CFG_SCALE, **memory))
    cuda = bb.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = sample(bb, guide if preset else None, cfg, num_images=1, seed=seed, prompt=PROMPT)
    if cuda:
        torch.cuda.synchronize()
    return res, time.perf_counter() - t0, (torch.cuda.max_memory_allocated() / 1e9 if cuda else None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=("auto", "full", "tiny"), default="auto", help="auto: full configs on CUDA, tiny on CPU")
    p.add_argument("--models", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    p.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    p.add_argument("--guide-dtype", default="fp32", choices=sorted(DTYPES),
                   help="the guide network's dtype (the plugins load their guides in fp32 whatever the pipeline's dtype)")
    p.add_argument("--presets", default="auto,ugd", help="guided presets to time beside an unguided run")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of each timed run (ugd's default for Stable Diffusion: 50)")
    p.add_argument("--scale-steps", type=int, default=10, help="DDIM steps of each loss-scale run")
    p.add_argument("--scales", default="1e-3,1e3")
    p.add_argument("--fused-attention", action="store_true",
                   help="loss-scale runs: keep the fused attention kernels (not deterministic in their backward on CUDA)")
    p.add_argument("--knobs", default="on,off", help="memory knobs for the timed runs: on, off or both")
    p.add_argument("--budget-s", type=float, default=0, help="skip what is left once this many seconds have passed (0 = none)")
    p.add_argument("--json", default="", help="write every row here (rewritten after each row, so a cut-off run keeps its rows)")
    args = p.parse_args(argv)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    device = torch.device(args.device)
    tiny = args.size == "tiny" or (args.size == "auto" and device.type != "cuda")
    dtype = DTYPES[args.dtype]
    start = time.perf_counter()
    over = lambda: bool(args.budget_s) and time.perf_counter() - start > args.budget_s  # noqa: E731
    out: dict[str, Any] = dict(machine=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                               torch=torch.__version__, diffusers=diffusers.__version__, tiny=tiny, dtype=args.dtype, guide_dtype=args.guide_dtype,
                               steps=args.steps, scale_steps=args.scale_steps, cost=[], scale=[])

    def save() -> None:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=1)

    print(f"machine: {out['machine']}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{'tiny' if tiny else 'full-size'} configs, UNet, VAE and text encoder {args.dtype}, guide {args.guide_dtype}, batch 1, CFG {CFG_SCALE}\n", flush=True)
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    for name in presets:
        if name not in PRESETS:
            sys.exit(f"unknown preset {name!r}; use one of: {', '.join(PRESETS)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    print("| model | memory knobs | preset | steps | s/image | × unguided | peak GB | denoiser fwd / bwd | guide fwd / bwd | guide loss (final image) | finite |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    built: dict[str, tuple[Any, Any]] = {}
    for model in models:
        if over():
            print(f"(budget spent: {model} skipped)", flush=True)
            continue
        bb = build(model, tiny, dtype, device)
        guide = segmentation_guide(bb.sample_shape[-1] * bb.vae_factor, DTYPES[args.guide_dtype], device)
        built[model] = (bb, guide)
        for knobs in [k.strip() == "on" for k in args.knobs.split(",") if k.strip()]:
            memory = MEMORY_KNOBS if knobs else {k: False for k in MEMORY_KNOBS}
            run(bb, guide, "auto", 2, memory)  # warm-up: kernels chosen, allocator filled
            base = None
            for preset in [None, *presets]:
                if over():
                    print(f"(budget spent: {model} knobs {'on' if knobs else 'off'} {preset or 'unguided'} and later skipped)", flush=True)
                    break
                res, secs, peak = run(bb, guide, preset, args.steps, memory)
                base = secs if preset is None else base
                st = res.stats.to_dict()
                row = dict(model=model, knobs=knobs, preset=preset or "unguided", steps=args.steps, seconds=secs, peak_gb=peak,
                           ratio=secs / base if base else None, loss=mean_loss(guide, res.images),
                           finite=bool(torch.isfinite(res.images).all()), **{k: st[k] for k in ("denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward")})
                out["cost"].append(row)
                save()
                print(f"| {model} | {'on' if knobs else 'off'} | {row['preset']} | {args.steps} | {secs:.2f} | {row['ratio']:.2f} | "
                      f"{'–' if peak is None else f'{peak:.2f}'} | {row['denoiser_forward']} / {row['denoiser_backward']} | "
                      f"{row['guide_forward']} / {row['guide_backward']} | {row['loss']:.4f} | {'yes' if row['finite'] else 'NO'} |", flush=True)
    print()
    # part 2: loss-scale invariance of the default, deterministic kernels
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda" and not args.fused_attention:  # the fused attention's backward is not deterministic; the plain one is
        torch.backends.cuda.enable_flash_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_cudnn_sdp(False)
    print("| model | loss × | max abs difference of the image (in [-1, 1]) from loss × 1 | its guide loss |")
    print("|---|---|---|---|", flush=True)
    for model, (bb, guide) in built.items():
        if over():
            print(f"(budget spent: {model}'s loss-scale runs skipped)", flush=True)
            continue
        memory = MEMORY_KNOBS
        ref, _, _ = run(bb, guide, "auto", args.scale_steps, memory)
        for c in ["1 (rerun)", *[s.strip() for s in args.scales.split(",") if s.strip()]]:
            if over():
                break
            g = guide if c.startswith("1 ") else loss_scaled(guide, float(c))
            res, _, _ = run(bb, g, "auto", args.scale_steps, memory)
            diff = float((res.images - ref.images).abs().max())
            out["scale"].append(dict(model=model, scale=c, max_abs_diff=diff, loss=mean_loss(guide, res.images)))
            save()
            print(f"| {model} | {c} | {diff:.2e} | {out['scale'][-1]['loss']:.4f} |", flush=True)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s", flush=True)
    return out


if __name__ == "__main__":
    main()
