"""One default, every task: the default preset against the best method of each task of a digits bench run,
and the example plugin's brightness guide at weight 1 for every method.

    OMP_NUM_THREADS=1 python benchmarks/one_default.py --results bench-out/one-default/results.json \
        --seeds 1000,1001,1002 --steps 20 --out bench-out/one-default

Part 1 reads a finished ``ugd bench digits`` run (its results.json) and prints, per task, the best method by
the task metric, the default's metric and its ratio to the best (metric / best when higher is better,
best / metric when lower is), and both judges' class accuracy where a class is judged. Part 2 samples the
brightness guide of docs/example-plugin at weight 1 (target level +0.8: the level the default's README
example asks) with every method of that run and reports the images' mean brightness (higher is nearer the
target) and its distance to the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core.registry import get_registry  # noqa: E402

LEVEL = 0.8


def ratio(value: float, best: float, higher: bool) -> float:
    if higher:
        return value / best if best else float("nan")
    return best / value if value else float("nan")


def task_table(results: dict[str, Any], default: str, baseline: str) -> list[str]:
    from ugd_digits.bench import CLASS_TASKS, HIGHER_IS_BETTER

    rows = [r for r in results["rows"] if r["method"] != "unguided"]
    lines = ["| task | best method | best | default | default / best | "
             f"{baseline} | default class acc (classifier / NN) | best's class acc (classifier / NN) |", "|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        trs = {r["method"]: r for r in rows if r["task"] == task}
        higher = HIGHER_IS_BETTER[task]
        best_m = (max if higher else min)(trs, key=lambda m: trs[m]["metric"])
        d, b, base = trs.get(default), trs[best_m], trs.get(baseline)
        if d is None:
            continue

        def cls(r: dict[str, Any] | None) -> str:
            return f"{r['class_accuracy']:.2f} / {r['nn_accuracy']:.2f}" if r is not None and task in CLASS_TASKS else "–"

        base_metric = f"{base['metric']:.3f}" if base is not None else "–"
        lines.append(f"| {task} | {best_m} | {b['metric']:.3f} | {d['metric']:.3f} | {ratio(d['metric'], b['metric'], higher):.2f} | "
                     f"{base_metric} | {cls(d)} | {cls(b)} |")
    return lines


def brightness_table(methods: dict[str, Any], seeds: list[int], n: int, steps: int) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "example-plugin"))
    from ugd_example_brightness.plugin import brightness_guide

    reg = get_registry()
    backbone = reg.build("backbone", "digits", {}, device="cpu")
    guide = brightness_guide(level=LEVEL)
    lines = [f"| method | mean brightness (target {LEVEL}) | |mean - target| | non-finite |", "|---|---|---|---|"]
    for m, settings in methods.items():
        sd = [s * 100_000 + j for s in seeds for j in range(n)]
        cfg = SamplerConfig.from_dict(dict(settings or {}, num_steps=steps))
        out = sample(backbone, [guide] if settings is not None else [], cfg, num_images=len(sd), seed=sd).images
        fin = torch.isfinite(out.flatten(1)).all(1)
        level = out[fin].mean(dim=(1, 2, 3))
        mean = float(level.mean()) if len(level) else float("nan")
        lines.append(f"| {m} | {mean:.3f} | {abs(mean - LEVEL):.3f} | {int((~fin).sum())} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="results.json of a `ugd bench digits` run")
    p.add_argument("--default", default="auto")
    p.add_argument("--baseline", default="digits-full", help="today's default, for the 'at least as well' column")
    p.add_argument("--seeds", default="1000,1001,1002")
    p.add_argument("--samples", type=int, default=2, help="brightness samples per seed")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="")
    a = p.parse_args()
    results = json.loads(Path(a.results).read_text())
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    lines = task_table(results, a.default, a.baseline)
    print("\n".join(lines), flush=True)
    methods = results["settings"]["methods"]
    bright = brightness_table(methods, [int(s) for s in a.seeds.split(",")], a.samples, a.steps)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "one-default.md").write_text("\n".join(lines) + "\n\n" + "\n".join(bright) + "\n")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
