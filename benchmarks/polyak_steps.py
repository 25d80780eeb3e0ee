"""Backward steps no longer than each guide's Polyak step (``backward_normalize="polyak"``) against `auto`'s
fixed-length steps, on the digits inpaint task alone and composed with its class term: each guide's own loss
on the final images (what choosing may use; no judge), and how much of its share each guide kept in every
backward step of the polyak run (min(1, rho_i / lr), docs/algorithm.md "Steps that stop at a guide's zero").

    OMP_NUM_THREADS=1 python benchmarks/polyak_steps.py --seeds 638 --samples 4

Pilot seeds only (500-999): a diagnostic that chooses nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import auto_pilot  # noqa: E402  (the pilot's task cases and guide builder)

from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core import sampler as sampler_module  # noqa: E402
from ugd_core.guidance import GuideSet  # noqa: E402
from ugd_core.registry import get_registry  # noqa: E402

CANDIDATES = {"auto": {}, "auto + polyak": {"backward_normalize": "polyak"}}


class ShareLog:
    """Records each guide's share [G, N] (``polyak_shares``) at every call of ``polyak_shortened``."""

    def __init__(self) -> None:
        self.shares: list[torch.Tensor] = []
        self.inner = sampler_module.polyak_shortened

    def __call__(self, terms: torch.Tensor, parts: torch.Tensor, cap: float, gain: torch.Tensor) -> Any:
        self.shares.append(sampler_module.polyak_shares(terms, parts, cap))
        return self.inner(terms, parts, cap, gain)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="638", help="pilot seeds (500-999)")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    if any(not 500 <= s <= 999 for s in seeds):
        p.error("--seeds must be pilot seeds (500-999): the reported seeds are looked at once per decision")
    reg = get_registry()
    backbone = reg.build("backbone", "digits", {}, device="cpu")
    base = dict(reg.get("preset", "auto").settings)
    print("| task | candidate | guide | own loss (mean) | per sample | median share kept, first / last third of steps |")
    print("|---|---|---|---|---|---|")
    table = []
    for alone in (True, False):
        for name, knobs in CANDIDATES.items():
            rows, log = [], ShareLog()
            sampler_module.polyak_shortened = log
            try:
                for seed in seeds:
                    (specs, _), *_ = auto_pilot.task_specs("inpaint", seed, 1)
                    specs = specs[:1] if alone else specs
                    items = auto_pilot.build(specs, reg, 1.0)
                    cfg = SamplerConfig.from_dict(dict(base, **knobs, num_steps=a.steps))
                    out = sample(backbone, GuideSet(items), cfg, num_images=a.samples, seed=[seed * 100_000 + j for j in range(a.samples)])
                    rows.append(auto_pilot.raw_losses(items, out.images))
            finally:
                sampler_module.polyak_shortened = log.inner
            losses = torch.cat(rows, 1)
            task = "inpaint alone" if alone else "inpaint + label"
            for g, spec in enumerate(specs):
                first = last = float("nan")
                if log.shares:
                    s = torch.stack(log.shares)[:, g]  # [calls, N]
                    third = max(1, len(s) // 3)
                    first, last = float(s[:third].median()), float(s[-third:].median())
                guide = spec.split(":")[0]
                table.append(dict(task=task, candidate=name, guide=guide, loss=float(losses[g].mean()), first=first, last=last))
                per = ", ".join(f"{v:.2g}" for v in losses[g].tolist())
                kept = "–" if first != first else f"{first:.2f} / {last:.2f}"
                print(f"| {task} | {name} | {guide} | {float(losses[g].mean()):.3g} | {per} | {kept} |", flush=True)
    return table


if __name__ == "__main__":
    main()
