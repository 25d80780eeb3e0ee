"""How a composition's `weight=` trades placement for the class with the default preset (a diagnostic).

    python benchmarks/composition_weights.py --seeds 634,635,636 --weights 0.5,1,2,4

With every guide unit-RMS, `weight=` is a guide's share of each step (docs/algorithm.md, "Scale-free
guidance"), and the docs tell a user who wants the box placed better to say so with it. This measures what
that buys on the two compositions (box + label, mask + label): the placement guide at each weight, the class
guide at 1, `auto` at 20 steps, on pilot seeds. Reported only with what choosing may use: each guide's own loss
on the final images relative to unguided (same seeds) and the development judge's class accuracy and
non-digit share (benchmarks/auto_pilot.py's helpers). It chooses nothing; the held-out evaluators are not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_pilot import build, digits_world, pilot_seeds, raw_losses, task_specs  # noqa: E402  (sets the offline variables, puts the repo on the path)

import torch  # noqa: E402

from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core.guidance import GuideSet  # noqa: E402
from ugd_digits.bench import weighted  # noqa: E402  (only the named guide takes the weight)

PLACEMENT = {"box": "digit-box", "mask+label": "digit-mask"}  # the guide whose weight varies, per task


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="634,635,636", help="pilot seeds (500-999)")
    p.add_argument("--weights", default="0.5,1,2,4", help="the placement guide's weights")
    p.add_argument("--tasks", default="box,mask+label")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--cases", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--preset", default="auto")
    a = p.parse_args(argv)
    seeds = pilot_seeds(a.seeds, "634,635")
    tasks = [t for t in a.tasks.split(",") if t]
    for t in tasks:
        if t not in PLACEMENT:
            sys.exit(f"error: unknown composition {t!r}; use {', '.join(PLACEMENT)}")
    weights = [float(w) for w in a.weights.split(",") if w]
    reg, backbone, judge = digits_world()
    cfg = SamplerConfig.from_dict(dict(reg.get("preset", a.preset).settings, num_steps=a.steps))
    rows: list[dict[str, float]] = []
    unguided: dict[tuple[str, int, int], torch.Tensor] = {}
    print("| task | placement weight | placement guide's loss (× unguided) | class guide's loss (× unguided) | dev-NN class acc | dev-NN non-digit | non-finite |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for task in tasks:
        for w in [None, *weights]:  # None: unguided, the reference of every ratio
            ratios, hits, nondigit, nonfinite = [], [], [], 0
            for seed in seeds:
                for ci, (specs, label) in enumerate(task_specs(task, seed, a.cases)):
                    sd = [seed * 100_000 + ci * 1000 + j for j in range(a.samples)]
                    items = build(weighted(specs, PLACEMENT[task], w or 1.0), reg, 1.0)
                    out = sample(backbone, GuideSet(items) if w is not None else [], cfg, num_images=a.samples, seed=sd).images
                    fin = torch.isfinite(out).flatten(1).all(1)
                    nonfinite += int((~fin).sum())
                    loss = raw_losses(build(specs, reg, 1.0), torch.nan_to_num(out, nan=0.0)).mean(1)  # [guides]: placement, class
                    if w is None:
                        unguided[(task, seed, ci)] = loss
                    ratios.append(loss / unguided[(task, seed, ci)])
                    v = judge.judge(out)
                    nondigit.append(float((~v.is_digit | ~fin).double().mean()))
                    hits.append(float((v.correct(torch.full((a.samples,), label)) & fin).double().mean()))
            r = torch.stack(ratios).mean(0)
            row = dict(task=task, weight=w if w is not None else 0.0, placement=float(r[0]), label=float(r[1]),
                       acc=sum(hits) / len(hits), nondigit=sum(nondigit) / len(nondigit), nonfinite=nonfinite)
            rows.append(row)
            print(f"| {task} | {'unguided' if w is None else f'{w:g}'} | {row['placement']:.3f} | {row['label']:.3g} | "
                  f"{row['acc']:.3f} | {row['nondigit']:.3f} | {nonfinite} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
