"""Sensitivity of each preset to its strength and to the guide's loss scale, with and without the scale-free
knobs, on the digits label task, judged by the held-out evaluator classifier and the nearest-neighbour judge.

    OMP_NUM_THREADS=2 python benchmarks/sensitivity.py --seeds 1000 --samples 1 --steps 20 --out docs/bench/sensitivity

A point is a preset's settings with (a) every strength multiplied by m (forward_strength and backward_lr:
TFG's rho and mu) or (b) the guide's loss multiplied by c. "+knobs" adds the scale-free knobs to a preset
(guide_normalize=grad; backward_normalize=grad and backward_backtrack=3 where it takes SGD backward
steps); "-knobs" removes them (from ``auto``). The label guide is the bench's (digit-robust, weight 1),
all ten classes, ``--samples`` per class per seed. Writes sensitivity.md, sensitivity.json and
sensitivity.png (two panels: accuracy by both judges against m and against c).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core.registry import get_registry  # noqa: E402
from ugd_core.testing import loss_scaled  # noqa: E402

KNOBS_ON: dict[str, Any] = dict(guide_normalize="grad")
KNOBS_ON_SGD: dict[str, Any] = dict(backward_normalize="grad", backward_backtrack=3)
KNOBS_OFF: dict[str, Any] = dict(guide_normalize="none", forward_normalize="none", backward_normalize="none", backward_backtrack=0)


def variants(name: str, settings: dict[str, Any], knobs: str) -> dict[str, dict[str, Any]]:
    """The preset as registered, plus its +knobs or -knobs twin."""
    out = {name: dict(settings)}
    on = settings.get("guide_normalize", "none") == "grad"
    if knobs in ("both", "toggle"):
        if on:
            out[f"{name} -knobs"] = dict(settings, **KNOBS_OFF)
        else:
            extra = KNOBS_ON_SGD if settings.get("backward_steps", 0) and settings.get("backward_optimizer", "sgd") == "sgd" else {}
            out[f"{name} +knobs"] = dict(settings, **KNOBS_ON, **extra)
    return out


def scaled(settings: dict[str, Any], m: float) -> dict[str, Any]:
    out = dict(settings)
    for k in ("forward_strength", "backward_lr"):
        if k in out:
            out[k] = out[k] * m
    if "backward_lr" not in out and out.get("backward_steps", 0):
        out["backward_lr"] = SamplerConfig().backward_lr * m
    return out


def main() -> None:
    from ugd_digits.bench import DigitsBench

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1000", help="reported seeds (1000-1999)")
    p.add_argument("--samples", type=int, default=1, help="samples per class per seed")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--presets", default="auto,digits-full,dps,freedom,mpgd,lgd,tfg,ugd")
    p.add_argument("--knobs", default="toggle", choices=["toggle", "none"])
    p.add_argument("--strength-mults", default="0.25,0.5,1,2,4")
    p.add_argument("--loss-mults", default="0.001,0.01,0.1,1,10,100,1000")
    p.add_argument("--out", default="sensitivity-out")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    reg = get_registry()
    bench = DigitsBench(samples=a.samples, seeds=tuple(seeds), steps=a.steps, tasks=("label",), methods={}, registry=reg)
    methods: dict[str, dict[str, Any]] = {}
    for name in a.presets.split(","):
        methods.update(variants(name, dict(reg.get("preset", name).settings), a.knobs))
    points = [("strength", float(m)) for m in a.strength_mults.split(",")] + [("loss", float(c)) for c in a.loss_mults.split(",") if float(c) != 1.0]
    rows = []
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| method | axis | multiplier | classifier acc | NN acc | NN non-digit | non-finite | s/sample |\n|---|---|---|---|---|---|---|---|", flush=True)
    for method, settings in methods.items():
        for axis, mult in points:
            cfg = SamplerConfig.from_dict(dict(scaled(settings, mult) if axis == "strength" else settings, num_steps=a.steps))
            hits, nn, nd, nf, secs, total = 0.0, 0.0, 0.0, 0, 0.0, 0
            for seed in seeds:
                from ugd_digits.bench import task_cases

                cases = task_cases("label", seed, 10, bench.label_guide)
                (item,) = bench._label_batch(cases, a.samples)
                if axis == "loss":
                    item = type(item)(loss_scaled(item.guide, mult), item.weight)
                sd = [seed * 100_000 + ci * 1000 + j for ci in range(len(cases)) for j in range(a.samples)]
                t0 = time.perf_counter()
                res = sample(bench.backbone, [item], cfg, num_images=len(sd), seed=sd)
                secs += time.perf_counter() - t0
                s = bench.score("label", cases, res.images, a.samples)
                w = len(sd)
                hits, nn, nd, nf, total = hits + s["class_accuracy"] * w, nn + s["nn_accuracy"] * w, nd + s["nn_nondigit"] * w, nf + s["nonfinite"], total + w
            row = dict(method=method, axis=axis, mult=mult, classifier=hits / total, nn=nn / total, nondigit=nd / total,
                       nonfinite=nf, samples=total, seconds_per_sample=secs / total)
            rows.append(row)
            print(f"| {method} | {axis} | {mult:g} | {row['classifier']:.2f} | {row['nn']:.2f} | {row['nondigit']:.2f} | {nf} | {row['seconds_per_sample']:.2f} |", flush=True)
    (out / "sensitivity.json").write_text(json.dumps(dict(args=vars(a), methods=methods, rows=rows), indent=2))
    plot(rows, out / "sensitivity.png", a)
    lines = ["| method | " + " | ".join(f"×{m:g} strength" for _, m in points if _ == "strength") + " | " +
             " | ".join(f"loss ×{c:g}" for _, c in points if _ == "loss") + " |"]
    lines.append("|---|" + "---|" * len(points))
    for method in methods:
        cells = [next(f"{r['classifier']:.2f} / {r['nn']:.2f}" + (f" ({r['nonfinite']} nf)" if r["nonfinite"] else "")
                      for r in rows if r["method"] == method and r["axis"] == ax and r["mult"] == m) for ax, m in points]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    (out / "sensitivity.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


def plot(rows: list[dict[str, Any]], path: Path, a: argparse.Namespace) -> None:
    """A 2 x 2 grid: presets as registered (top) and with the knobs toggled (bottom), against the strength
    (left) and the loss multiplier (right); one colour per preset, solid = classifier, dotted = NN judge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    bases = list(dict.fromkeys(m.split(" ")[0] for m in methods))
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharey=True)
    for col, (axis, label) in enumerate((("strength", "strength multiplier"), ("loss", "loss multiplier"))):
        for row, toggled in enumerate((False, True)):
            ax = axes[row][col]
            for m in methods:
                if ("knobs" in m) != toggled:
                    continue
                color = f"C{bases.index(m.split(' ')[0]) % 10}"
                pts = sorted((r["mult"], r["classifier"], r["nn"]) for r in rows if r["method"] == m and (r["axis"] == axis or r["mult"] == 1.0))
                xs = [x for x, _, _ in pts]
                ax.plot(xs, [y for _, y, _ in pts], "-", color=color, marker="o", label=m)
                ax.plot(xs, [z for _, _, z in pts], ":", color=color, marker="x", alpha=0.6)
            ax.set_xscale("log")
            ticks = sorted({r["mult"] for r in rows if r["axis"] == axis} | {1.0})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
            ax.set_title(("with the scale-free knobs toggled (+knobs / -knobs)" if toggled else "presets as registered"), fontsize=10)
            if col == 1:
                ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    for row in range(2):
        axes[row][0].set_ylabel("label accuracy (solid: classifier, dotted: NN judge)")
    fig.suptitle(f"digits label task, {a.steps} steps, reported seeds {a.seeds}, {a.samples} per class per seed (10 samples a point)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
