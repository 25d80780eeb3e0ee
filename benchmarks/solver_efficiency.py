"""Guided few-step solvers on the digits label task: target accuracy vs denoiser passes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/solver_efficiency.py [--samples-per-digit 2] \\
        [--steps 5,10,15,20,30,50] [--solvers ddim,dpm++,unipc] [--seeds 0] [--threads 1] \\
        [--preset NAME] [--label-guide digit] [--variant 'SOLVER:KNOB=VALUE;KNOB=VALUE'] [--pilot] [--out bench-out/solver-efficiency] \\
        [--plot docs/img/solver-efficiency.png] [--summarize OUT/cells.json]

For every solver (``SamplerConfig.scheduler``: ``ddim`` = ugd's exact DDIM, or a diffusers scheduler
class name / alias) and step count, draws ``samples-per-digit`` images of each digit 0-9 per seed with
the bench's label guide (``--label-guide``: the bench's default ``digit-robust``, or the clean ``digit``)
and the scale-free default every solver takes, ``auto-eps`` (``auto``'s spherical step needs ancestral DDIM), through the
digits bench (``ugd_digits.bench.DigitsBench``: same guides, per-image seeds and judges as
``ugd bench digits``). Reports both judges (calibrated ``eval_classifier`` and the nearest-neighbour
judge with its non-digit share), denoiser passes per sample (forward and backward, from
``SampleResult.stats``) and seconds per sample with its ratio to DDIM at 50 steps in the same run.
Prints a markdown table and writes ``results.md``, ``results.json`` (every raw number), ``cells.json``
(after every cell, so an interrupted run can be summarised with ``--summarize``) and, with matplotlib,
``solver-efficiency.png`` to ``--out``.

``--variant`` adds a row derived from the preset (preset + the stated knob changes, JSON values) for
one solver; ``--pilot`` scores only the guide's own loss (no judge is run), for choosing such a
variant on pilot seeds (>= 500) without looking at any judge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ugd_core import SamplerConfig  # noqa: E402
from ugd_core.errors import UgdError  # noqa: E402
from ugd_core.registry import get_registry  # noqa: E402
from ugd_digits.bench import DEFAULT_LABEL_GUIDE, LABEL_GUIDES  # noqa: E402

BACKBONE = "digits"
DEFAULT_STEPS = "5,10,15,20,30,50"
DEFAULT_SOLVERS = "ddim,dpm++,unipc"
REFERENCE = ("ddim", 50)  # the quality and cost every row is compared with
GOAL_PASS_SHARE = 0.30  # the goal: DDIM-50 quality in <= 30 % of its denoiser passes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples-per-digit", type=int, default=2, help="images per digit 0-9 per seed")
    p.add_argument("--steps", default=DEFAULT_STEPS, help="comma-separated step counts")
    p.add_argument("--solvers", default=DEFAULT_SOLVERS, help="comma-separated: ddim or diffusers scheduler names/aliases")
    p.add_argument("--seeds", default="", help="comma-separated bench seeds (image seed = seed*100000 + digit*1000 + j); "
                   "default: the first pilot seed (500) with --pilot, else the first reported seed (1000)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--preset", default="", help="preset name or JSON file (default: auto-eps, the default every solver takes)")
    p.add_argument("--label-guide", default=DEFAULT_LABEL_GUIDE, choices=LABEL_GUIDES,
                   help="the label guide (the digits bench's label_guide; the reported solver table used digit)")
    p.add_argument("--variant", action="append", default=[], metavar="SOLVER:KNOB=VALUE;...",
                   help="an extra row: the preset with these knob changes, run with SOLVER (repeatable)")
    p.add_argument("--pilot", action="store_true", help="score only the guide's own loss (no judge): for choosing variants")
    p.add_argument("--out", default="bench-out/solver-efficiency", help="output folder (results.md, results.json, PNG)")
    p.add_argument("--plot", default="", help="also copy the figure to this path")
    p.add_argument("--summarize", default="", metavar="CELLS_JSON[,CELLS_JSON]",
                   help="no sampling: rebuild the table, JSON and figure from runs' cells.json (interrupted runs too; "
                        "several runs, e.g. one per seed, are pooled)")
    return p.parse_args(argv)


def _ints(text: str, what: str, minimum: int) -> list[int]:
    try:
        vals = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < minimum for v in vals) or len(set(vals)) != len(vals):
        raise UgdError(f"--{what} {text!r} is not a comma-separated list of distinct integers >= {minimum}; write e.g. --{what} 5,10,15")
    return vals


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``'dpm++:forward_strength=8;recurrence_window=[0,0.5]'`` -> ('dpm++', {...}); JSON values, else strings."""
    solver, sep, body = text.partition(":")
    if not sep or not solver or not body:
        raise UgdError(f"--variant {text!r} is not SOLVER:KNOB=VALUE[;KNOB=VALUE]; write e.g. --variant 'dpm++:forward_strength=8'")
    changes: dict[str, Any] = {}
    for item in body.split(";"):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UgdError(f"--variant {text!r}: {item!r} is not KNOB=VALUE; write e.g. forward_strength=8")
        try:
            changes[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            changes[key.strip()] = value.strip()
    return solver.strip(), changes


def plan(args: argparse.Namespace, registry: Any) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """Check every input before any work: (preset name, preset settings, rows to run)."""
    from ugd_core.config import resolve_preset

    if args.samples_per_digit < 1:
        raise UgdError(f"--samples-per-digit must be >= 1, got {args.samples_per_digit}")
    if args.threads < 1:
        raise UgdError(f"--threads must be >= 1, got {args.threads}")
    args.step_list = _ints(args.steps, "steps", 1)
    from cli.bench import SEED_RANGES

    default_seed = SEED_RANGES["pilot" if args.pilot else "reported"][0]  # never the old, overlooked seeds 0-9
    args.seed_list = _ints(args.seeds or str(default_seed), "seeds", 0)
    preset = args.preset or "auto-eps"  # the default preset every scheduler takes (auto's needs ancestral DDIM)
    name, settings = resolve_preset(preset, registry)
    rows: list[dict[str, Any]] = []
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    if not solvers:
        raise UgdError("--solvers is empty; write e.g. --solvers ddim,dpm++,unipc")
    for s in solvers:
        rows.append(dict(label=s, solver=s, changes={}))
    for text in args.variant:
        s, changes = parse_variant(text)
        label = f"{s} ({', '.join(f'{k}={json.dumps(v)}' for k, v in changes.items())})"
        rows.append(dict(label=label, solver=s, changes=changes))
    for r in rows:  # unknown solver or knob: one UgdError line naming the fix
        r["settings"] = SamplerConfig.from_dict(dict(settings, **r["changes"], scheduler=r["solver"])).to_dict()
        r["settings"].pop("num_steps")
    return name, dict(settings), rows


def guide_loss(bench: Any, cases: list[Any], images: torch.Tensor, n: int) -> list[float]:
    """The guides' own weighted loss on each final image (the quantity guidance minimises)."""
    from cli.run import build_guide
    from ugd_core.guidance import GuideSet

    losses: list[float] = []
    with torch.no_grad():
        for ci, case in enumerate(cases):
            guides = GuideSet([build_guide(spec, bench.reg, bench.device)[0] for spec in case.guides])
            x = images[ci * n : (ci + 1) * n].to(bench.device)
            bad = ~torch.isfinite(x).flatten(1).all(1)  # a non-finite sample has the worst loss, never a blank's
            losses += torch.where(bad, torch.inf, guides.loss(torch.nan_to_num(x, nan=-1.0))).cpu().tolist()
    return losses


def run_cell(bench: Any, row: dict[str, Any], steps: int, seed: int, n: int, pilot: bool) -> dict[str, Any]:
    """Generate the label task for one (row, steps, seed) and score it."""
    cases, images, cost = bench.generate("label", row["settings"], seed, n, steps)
    cell: dict[str, Any] = dict(row=row["label"], solver=row["solver"], steps=steps, seed=seed, samples=len(images), **cost)
    cell["denoiser_passes_per_sample"] = cost["denoiser_forward_per_sample"] + cost["denoiser_backward_per_sample"]
    cell["guide_loss"] = guide_loss(bench, cases, images, n)
    cell["nonfinite"] = int((~torch.isfinite(images).flatten(1).all(1)).sum())
    if not pilot:
        score = bench.score("label", cases, images, n)
        cell.update({k: v for k, v in score.items() if k not in ("metric",)})
        labels = torch.tensor([c.label for c in cases for _ in range(n)])
        pred, _ = bench.evaluators.classify(images)
        verdict = bench.nn_judge.judge(images)  # a non-finite sample is never a digit
        cell["classifier_correct"] = (pred == labels).int().tolist()
        cell["nn_correct"] = verdict.correct(labels).int().tolist()
        cell["nn_is_digit"] = verdict.is_digit.int().tolist()
        cell["labels"] = labels.tolist()
    return cell


def aggregate(cells: list[dict[str, Any]], pilot: bool) -> list[dict[str, Any]]:
    """Pool seeds per (row, steps): accuracies over every image, cost as means over seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["row"], c["steps"]), []).append(c)
    out = []
    for (label, steps), cs in groups.items():
        n = sum(c["samples"] for c in cs)
        r: dict[str, Any] = dict(row=label, solver=cs[0]["solver"], steps=steps, seeds=[c["seed"] for c in cs], n=n)
        for key in ("denoiser_forward_per_sample", "denoiser_backward_per_sample", "denoiser_passes_per_sample", "seconds_per_sample"):
            r[key] = sum(c[key] for c in cs) / len(cs)
        losses = [v for c in cs for v in c["guide_loss"]]
        r["guide_loss"] = sum(losses) / len(losses)
        r["guide_loss_se"] = _se(losses)
        r["nonfinite"] = sum(c["nonfinite"] for c in cs)
        if not pilot:
            for key, src in (("classifier_accuracy", "classifier_correct"), ("nn_accuracy", "nn_correct")):
                hits = [v for c in cs for v in c[src]]
                r[key] = sum(hits) / n
                r[key + "_se"] = math.sqrt(r[key] * (1 - r[key]) / n)
            r["nn_nondigit"] = 1 - sum(v for c in cs for v in c["nn_is_digit"]) / n
            r["confident"] = sum(c["confident"] * c["samples"] for c in cs) / n
        out.append(r)
    order = list(dict.fromkeys(c["row"] for c in cells))
    out.sort(key=lambda r: (order.index(r["row"]), r["steps"]))
    ref = next((r for r in out if r["row"] == REFERENCE[0] and r["steps"] == REFERENCE[1]), None)
    # time is compared within a run (same seed, same load): each cell over the DDIM-50 cell of its seed, then averaged
    ref_seconds = {c["seed"]: c["seconds_per_sample"] for c in cells if c["row"] == REFERENCE[0] and c["steps"] == REFERENCE[1]}
    for r in out:
        r["pass_share_of_ddim50"] = r["denoiser_passes_per_sample"] / ref["denoiser_passes_per_sample"] if ref else None
        ratios = [c["seconds_per_sample"] / ref_seconds[c["seed"]] for c in groups[(r["row"], r["steps"])] if c["seed"] in ref_seconds]
        r["time_ratio_to_ddim50"] = sum(ratios) / len(ratios) if ratios else None
    return out


def _se(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def goal_reading(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row label: the fewest steps whose accuracy (point estimate, each judge) is >= DDIM-50's."""
    ref = next((r for r in rows if r["row"] == REFERENCE[0] and r["steps"] == REFERENCE[1]), None)
    if ref is None or "classifier_accuracy" not in ref:
        return []
    out = []
    for label in dict.fromkeys(r["row"] for r in rows):
        rs = sorted((r for r in rows if r["row"] == label), key=lambda r: r["steps"])
        entry: dict[str, Any] = dict(row=label)
        for judge in ("classifier_accuracy", "nn_accuracy"):
            hit = next((r for r in rs if r[judge] >= ref[judge]), None)
            entry[judge] = dict(steps=hit["steps"], pass_share=hit["pass_share_of_ddim50"]) if hit else None
        both = next((r for r in rs if r["classifier_accuracy"] >= ref["classifier_accuracy"] and r["nn_accuracy"] >= ref["nn_accuracy"]), None)
        entry["both"] = dict(steps=both["steps"], pass_share=both["pass_share_of_ddim50"]) if both else None
        entry["goal_met"] = bool(both and both["pass_share_of_ddim50"] <= GOAL_PASS_SHARE + 1e-9)
        out.append(entry)
    return out


def markdown(rows: list[dict[str, Any]], goal: list[dict[str, Any]], pilot: bool) -> str:
    def f(v: Any, d: int = 2) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    if pilot:
        lines = ["| solver | steps | denoiser passes / sample (fwd + bwd) | guide loss ↓ (± s.e.) | non-finite |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['row']} | {r['steps']} | {r['denoiser_passes_per_sample']:.0f} "
                         f"({r['denoiser_forward_per_sample']:.0f} + {r['denoiser_backward_per_sample']:.0f}) | "
                         f"{r['guide_loss']:.3f} ± {r['guide_loss_se']:.3f} | {r['nonfinite']} |")
        return "\n".join(lines) + "\n"
    lines = ["| solver | steps | n | denoiser passes / sample (fwd + bwd) | passes vs DDIM-50 | target acc, classifier ↑ | "
             "target acc, NN ↑ | NN non-digit ↓ | guide loss ↓ | s / sample | time vs DDIM-50 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['steps']} | {r['n']} | {r['denoiser_passes_per_sample']:.0f} ({r['denoiser_forward_per_sample']:.0f} + "
            f"{r['denoiser_backward_per_sample']:.0f}) | {f(r['pass_share_of_ddim50'])} | "
            f"{r['classifier_accuracy']:.2f} ± {r['classifier_accuracy_se']:.2f} | {r['nn_accuracy']:.2f} ± {r['nn_accuracy_se']:.2f} | "
            f"{r['nn_nondigit']:.2f} | {r['guide_loss']:.3f} | {r['seconds_per_sample']:.2f} | {f(r['time_ratio_to_ddim50'])} |")
    if goal:
        lines += ["", f"Fewest steps reaching DDIM-50's target accuracy (point estimates; goal: both judges within "
                  f"{GOAL_PASS_SHARE:.0%} of DDIM-50's passes, i.e. <= 15 steps):", "",
                  "| solver | classifier | NN judge | both | goal met |", "|---|---|---|---|---|"]

        def s(e: dict[str, Any] | None) -> str:
            return "not reached" if e is None else f"{e['steps']} steps ({e['pass_share']:.0%} of passes)"

        for e in goal:
            lines.append(f"| {e['row']} | {s(e['classifier_accuracy'])} | {s(e['nn_accuracy'])} | {s(e['both'])} | {'yes' if e['goal_met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> str:
    """Accuracy vs denoiser passes, one line per solver, one panel per judge; a message if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed: no figure (pip install matplotlib)"
    ref = next((r for r in rows if r["row"] == REFERENCE[0] and r["steps"] == REFERENCE[1]), None)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, (key, title) in zip(axes, (("classifier_accuracy", "calibrated classifier"), ("nn_accuracy", "nearest-neighbour judge"))):
        for i, label in enumerate(dict.fromkeys(r["row"] for r in rows)):
            rs = sorted((r for r in rows if r["row"] == label), key=lambda r: r["steps"])
            style = "--" if "(" in label else "-"
            xs = [r["denoiser_passes_per_sample"] * (1 + 0.025 * i) for r in rs]  # small offset so error bars do not overlap
            ax.errorbar(xs, [r[key] for r in rs], yerr=[r[key + "_se"] for r in rs], fmt="o" + style, ms=3, capsize=2, lw=1.2, label=label)
            for x, r in zip(xs, rs):
                ax.annotate(str(r["steps"]), (x, r[key]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        if ref is not None:
            ax.axhline(ref[key], color="grey", lw=0.8, ls=":", label="DDIM-50 level")
            ax.axvline(GOAL_PASS_SHARE * ref["denoiser_passes_per_sample"], color="grey", lw=0.8, ls="-.", label="30 % of DDIM-50 passes")
        ax.set_xscale("log")
        ticks = sorted({round(r["denoiser_passes_per_sample"]) for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("denoiser passes per sample (forward + backward)")
        ax.set_title(f"target accuracy, {title}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("target accuracy (numbers: steps)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return f"figure: {path}"


def machine(threads: int) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return dict(machine=platform.processor() or platform.machine(), system=platform.platform(), cpu_count=os.cpu_count(),
                threads=threads, torch=torch.__version__, python=platform.python_version(), load_average_at_start=load)


def summarize(path: str, out: Path, plot_copy: str) -> int:
    """Table, results.json and figure from the cells a run saved (no sampling, no judge re-run)."""
    cells, machines = [], []
    for one in path.split(","):
        try:
            saved = json.loads(Path(one).read_text())
            cells += saved["cells"]
            machines.append(saved.get("machine"))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            print(f"error: --summarize {one!r} is not a cells.json written by this script ({exc}); pass OUT/cells.json", file=sys.stderr)
            return 2
    if not cells:
        print(f"error: --summarize {path!r} holds no cells; pass the cells.json of a run that finished at least one cell", file=sys.stderr)
        return 2
    pilot = "classifier_correct" not in cells[0]
    agg = aggregate(cells, pilot)
    goal = [] if pilot else goal_reading(agg)
    md = markdown(agg, goal, pilot)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(dict(machines=machines, sources=path.split(","), summary=agg, goal=goal, cells=cells), indent=1, default=str))
    if not pilot:
        print(_figure(agg, out, plot_copy))
    return 0


def _figure(agg: list[dict[str, Any]], out: Path, plot_copy: str) -> str:
    msg = plot(agg, out / "solver-efficiency.png")
    if plot_copy and msg.startswith("figure"):
        Path(plot_copy).parent.mkdir(parents=True, exist_ok=True)
        Path(plot_copy).write_bytes((out / "solver-efficiency.png").read_bytes())
    return msg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        return summarize(args.summarize, Path(args.out), args.plot)
    registry = get_registry()
    try:
        preset, settings, rows = plan(args, registry)
    except UgdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ugd_digits.bench import DigitsBench

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine(args.threads)
    n = args.samples_per_digit
    print(f"machine: {info['machine']}, {info['cpu_count']} cores, torch {info['torch']}, threads {args.threads}, "
          f"load average {info['load_average_at_start']}")
    print(f"preset {preset} {json.dumps(settings)}, guide {args.label_guide}; {n} sample(s) x 10 digits x seeds {args.seed_list}; steps {args.step_list}"
          + (" (pilot: guide loss only)" if args.pilot else ""), flush=True)
    bench = DigitsBench(samples=n, seeds=tuple(args.seed_list), tasks=("label",), methods={r["label"]: r["settings"] for r in rows},
                        label_guide=args.label_guide)
    bench.generate("label", rows[0]["settings"], args.seed_list[0], 1, 1)  # warm-up: loads backbone and guides outside the timings
    cells = []
    start = time.perf_counter()
    # the DDIM-50 reference first, then by step count: an interrupted run keeps the cheap, informative cells
    jobs = sorted(((r, steps) for r in rows for steps in args.step_list),
                  key=lambda j: (j[0]["solver"] != REFERENCE[0] or j[1] != REFERENCE[1], j[1]))
    for r, steps in jobs:
        for seed in args.seed_list:
            cell = run_cell(bench, r, steps, seed, n, args.pilot)
            cells.append(cell)
            (out / "cells.json").write_text(json.dumps(dict(machine=info, cells=cells), default=str))
            acc = "" if args.pilot else f" acc {cell['class_accuracy']:.2f} / NN {cell['nn_accuracy']:.2f}"
            print(f"  {r['label']:>12} {steps:>3} steps seed {seed}: loss {sum(cell['guide_loss']) / len(cell['guide_loss']):.3f}{acc}, "
                  f"{cell['seconds_per_sample']:.2f} s/sample  [{time.perf_counter() - start:.0f} s]", flush=True)
    agg = aggregate(cells, args.pilot)
    goal = [] if args.pilot else goal_reading(agg)
    md = markdown(agg, goal, args.pilot)
    info["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["wall_seconds"] = time.perf_counter() - start
    header = (f"Preset `{preset}` ({json.dumps(settings)}); {n} sample(s) per digit × 10 digits × seeds {args.seed_list} "
              f"(image seed = seed·100000 + digit·1000 + j); {info['machine']}, {info['cpu_count']} cores, torch threads "
              f"{args.threads}, load average {info['load_average_at_start']} at start, {info['wall_seconds']:.0f} s wall.\n\n")
    print()
    print(md)
    (out / "results.md").write_text(header + md)
    real = None if args.pilot else bench.real_reference()
    (out / "results.json").write_text(json.dumps(dict(
        command=sys.argv, machine=info, preset=preset, preset_settings=settings, samples_per_digit=n, seeds=args.seed_list,
        steps=args.step_list, image_seed_rule="seed*100000 + digit*1000 + j", rows_settings={r["label"]: r["settings"] for r in rows},
        real_reference=real, summary=agg, goal=goal, cells=cells), indent=1, default=str))
    if not args.pilot:
        print(_figure(agg, out, args.plot))
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
