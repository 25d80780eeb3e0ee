"""Where a composition loses its class, does the class guide itself still read the asked class? (a diagnostic)

    OMP_NUM_THREADS=1 python benchmarks/class_reading.py --seeds 691,692

For box + label and mask + label on pilot seeds: per final image, the class guide's own cross-entropy and argmax
(the guide the sampler followed, ``digit-robust``) beside the development NN judge's verdict. If the samples the
judge reads as another class are read as the asked class by the guide, with its loss met, the sampler did what
the guide asked and the guide was satisfied by a change the judge does not read. Pilot seeds only (500-999); it
chooses nothing, and no held-out evaluator is run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_pilot import build, diagnostic_args, digits_world, task_specs  # noqa: E402  (sets the offline variables, puts the repo on the path)

import torch  # noqa: E402

from ugd_core import SamplerConfig, sample  # noqa: E402
from ugd_core.guidance import GuideSet, guide_loss  # noqa: E402
from ugd_digits.bench import weighted  # noqa: E402

PLACEMENT = {"box": "digit-box", "mask+label": "digit-mask"}
# (task, preset, the placement guide's weight; the class term at 1): auto at equal and at 4x share; the bench's
# best placement methods at the bench's weights (box 20, mask 100)
RUNS = [("box", "auto", 1.0), ("box", "auto", 4.0), ("box", "digits-full", 20.0), ("mask+label", "auto", 1.0),
        ("mask+label", "naive", 100.0)]
MET = 0.01  # a cross-entropy below this: the guide gives the asked class p > 0.99


def composition_samples(task: str, weight: float, cfg: SamplerConfig, seeds: list[int], cases: int, samples: int, reg: Any,
                        backbone: Any) -> Iterator[tuple[torch.Tensor, Any, int, list[int]]]:
    """Per case of a composition on each pilot seed, the final images (NaN as 0) with the placement guide at ``weight``
    and the class term at 1: (images, the class guide, the asked class, the image seeds)."""
    for seed in seeds:
        for ci, (specs, label) in enumerate(task_specs(task, seed, cases)):
            sd = [seed * 100_000 + ci * 1000 + j for j in range(samples)]
            items = build(weighted(specs, PLACEMENT[task], weight), reg, 1.0)
            out = torch.nan_to_num(sample(backbone, GuideSet(items), cfg, num_images=samples, seed=sd).images, nan=0.0)
            yield out, items[1].guide, label, sd  # task_specs: the placement guide, then the class term


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    a, seeds = diagnostic_args(__doc__, "691,692", argv)
    reg, backbone, judge = digits_world()
    print("| task | method | placement weight | samples | dev-NN class acc | class guide's CE < 0.01 | guide argmax = asked | "
          "dev-NN wrong: guide CE < 0.01 | dev-NN wrong: guide CE >= 0.01 | dev-NN wrong: guide argmax = asked |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows: list[dict[str, float]] = []
    for task, method, w in RUNS:
        cfg = SamplerConfig.from_dict(dict(reg.get("preset", method).settings, num_steps=a.steps))
        n = ok = met = asked = wrong_met = wrong_unmet = wrong_asked = 0
        for out, cls, label, _ in composition_samples(task, w, cfg, seeds, a.cases, a.samples, reg, backbone):
            with torch.no_grad():
                ce = guide_loss(cls, out)
                read = cls.f_fn(cls.preprocess(out)).argmax(-1) == label
            right = judge.judge(out).correct(torch.full((a.samples,), label))
            m = ce < MET
            n += a.samples
            ok, met, asked = ok + int(right.sum()), met + int(m.sum()), asked + int(read.sum())
            wrong_met += int((~right & m).sum())
            wrong_unmet += int((~right & ~m).sum())
            wrong_asked += int((~right & read).sum())
        print(f"| {task} | {method} | {w:g} | {n} | {ok / n:.2f} | {met / n:.2f} | {asked / n:.2f} | {wrong_met} | {wrong_unmet} | "
              f"{wrong_asked} of {n - ok} |", flush=True)
        rows.append(dict(task=task, method=method, weight=w, samples=n, right=ok, met=met, asked=asked, wrong_met=wrong_met,
                         wrong_unmet=wrong_unmet, wrong_asked=wrong_asked))
    return rows


if __name__ == "__main__":
    main()
