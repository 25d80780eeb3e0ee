"""Does the class guide read a composition's lost class once the image is projected back by the denoiser? (a diagnostic)

    OMP_NUM_THREADS=1 python benchmarks/projected_reading.py --seeds 704,705

Round 36 found the class guide satisfied (CE < 0.01) by drawings the development judge reads as another class, so
its own loss cannot tell a default when a met class may yield its share. This asks whether one more denoiser pass
can: re-noise each final image x to a noise level a (z = sqrt(a) x + sqrt(1 - a) n, fixed draws) and take the
backbone's own x0_hat(z); the class guide's cross-entropy on that projected image is a signal a sampler could
compute (a guide and the denoiser, no evaluator). Per sample: the guide's CE on x and on the projection at a = 0.5
and 0.2 (the mean over two noise draws), beside the development NN judge's verdict, for runs that keep the class
(`auto`, weight 1) and runs that lose it (the placement guide at weight 16 on box + label, 4 on mask + label).
Reported: how well each CE ranks the judge's wrong samples above its right ones (the AUC: 0.5 no better than chance,
1 every wrong sample above every right one). Pilot seeds only (500-999); it chooses nothing, no held-out evaluator.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_pilot import diagnostic_args, digits_world  # noqa: E402  (sets the offline variables, puts the repo on the path)
from class_reading import composition_samples  # noqa: E402

import torch  # noqa: E402

from ugd_core import SamplerConfig  # noqa: E402
from ugd_core.guidance import guide_loss  # noqa: E402

# (task, the placement guide's weight; the class term at 1), all with auto: equal shares, and a share that loses the
# class (weight 16 on box + label and above 2 on mask + label, docs/benchmarks.md, the compositions' weight diagnostic)
RUNS = [("box", 1.0), ("box", 16.0), ("mask+label", 1.0), ("mask+label", 4.0)]
LEVELS = (0.5, 0.2)  # alpha_bar of the re-noised image
DRAWS = 2


def projected(backbone, images: torch.Tensor, level: float, seed: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """x0_hat of the images re-noised to the timestep whose alpha_bar is nearest ``level`` (fixed noise)."""
    abar = backbone.scheduler.alphas_cumprod
    t = int((abar - level).abs().argmin())
    a = float(abar[t])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    z = a**0.5 * images + (1 - a) ** 0.5 * noise
    with torch.no_grad():
        eps = backbone.eps(z, torch.full((len(images),), t), None)
    return ((z - (1 - a) ** 0.5 * eps) / a**0.5).clamp(-1, 1)


def auc(score: torch.Tensor, wrong: torch.Tensor) -> float:
    """P(a wrong sample scores above a right one), ties counted half; nan without both kinds."""
    w, r = score[wrong], score[~wrong]
    if len(w) == 0 or len(r) == 0:
        return float("nan")
    diff = w[:, None] - r[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    a, seeds = diagnostic_args(__doc__, "704,705", argv)
    reg, backbone, judge = digits_world()
    cfg = SamplerConfig.from_dict(dict(reg.get("preset", "auto").settings, num_steps=a.steps))
    names = ["x"] + [f"a={lv:g}" for lv in LEVELS]
    print("| task | placement weight | samples | dev-NN wrong | " + " | ".join(f"mean CE on {n}: right / wrong" for n in names) + " |")
    print("|---|---|---|---|" + "---|" * len(names), flush=True)
    pooled_ce: list[torch.Tensor] = []
    pooled_wrong: list[torch.Tensor] = []
    for task, w in RUNS:
        ces, wrongs = [], []
        for out, cls, label, sd in composition_samples(task, w, cfg, seeds, a.cases, a.samples, reg, backbone):
            with torch.no_grad():
                row = [guide_loss(cls, out)]
                for lv in LEVELS:
                    row.append(torch.stack([guide_loss(cls, projected(backbone, out, lv, sd[0] + 7 * d))
                                            for d in range(DRAWS)]).mean(0))
            ces.append(torch.stack(row, 1))  # [samples, 1 + levels]
            wrongs.append(~judge.judge(out).correct(torch.full((a.samples,), label)))
        ce, wrong = torch.cat(ces), torch.cat(wrongs)
        pooled_ce.append(ce)
        pooled_wrong.append(wrong)
        cells = [f"{ce[~wrong, k].mean():.3g} / {ce[wrong, k].mean():.3g}" if wrong.any() and (~wrong).any() else "–"
                 for k in range(len(names))]
        print(f"| {task} | {w:g} | {len(ce)} | {int(wrong.sum())} | " + " | ".join(cells) + " |", flush=True)
    ce, wrong = torch.cat(pooled_ce), torch.cat(pooled_wrong)
    result = {n: auc(ce[:, k], wrong) for k, n in enumerate(names)}
    print(f"\nPooled over the {len(ce)} samples ({int(wrong.sum())} read as another class or no digit by the development "
          "judge): AUC of the class guide's CE at ranking them above the right ones: "
          + ", ".join(f"on {n} {v:.2f}" for n, v in result.items()))
    return result


if __name__ == "__main__":
    main()
