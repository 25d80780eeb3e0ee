"""Placement against class on the composed digits tasks: each method's point and `auto`'s curve over the placement
guide's weight, by both judges (a figure from finished bench runs; it samples nothing and chooses nothing).

    python benchmarks/composition_tradeoff.py --runs bench-out/w35-box bench-out/w35-mask \\
        --auto-weights 2=bench-out/w35-box2 4=bench-out/w35-box4 0.5=bench-out/w35-mask05 2=bench-out/w35-mask2 \\
        --out docs/bench/composition-tradeoff.png

``--runs``: bench outputs whose every row is plotted as a point (``auto`` among them at weight 1); ``--auto-weights``:
W=DIR, a run of `auto` alone with the placement guide at weight W (``--param guide_weights=...``; results.json files
written before the bench recorded its guide weights do not say it, so it is given here). Reads results.json only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COMPOSED = ("box", "mask+label")  # the bench's composed placement tasks (box = box + label)
TITLE = {"box": "box + label", "mask+label": "mask + label"}
JUDGES = (("class_accuracy", "held-out classifier"), ("nn_accuracy", "nearest-neighbour judge"))


def rows_of(run: Path) -> list[dict[str, Any]]:
    """The composed tasks' rows of one bench output (results.json)."""
    return [r for r in json.loads((run / "results.json").read_text())["rows"] if r["task"] in COMPOSED]


def collect(runs: list[Path], auto_weights: list[tuple[float, Path]]) -> tuple[dict, dict]:
    """(points: {task: {method: (IoU, classifier acc, NN acc)}}, curves: {task: [(weight, IoU, classifier, NN)]})."""
    points: dict[str, dict[str, tuple[float, float, float]]] = {}
    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    for run in runs:
        for r in rows_of(run):
            points.setdefault(r["task"], {})[r["method"]] = (r["metric"], r["class_accuracy"], r["nn_accuracy"])
            if r["method"] == "auto":
                curves.setdefault(r["task"], []).append((1.0, r["metric"], r["class_accuracy"], r["nn_accuracy"]))
    for w, run in auto_weights:
        for r in rows_of(run):
            if r["method"] == "auto":
                curves.setdefault(r["task"], []).append((w, r["metric"], r["class_accuracy"], r["nn_accuracy"]))
    return points, {t: sorted(c) for t, c in curves.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--auto-weights", nargs="*", default=[], help="W=DIR: a run of auto with the placement guide at weight W")
    p.add_argument("--out", type=Path, default=Path("bench-out/composition-tradeoff.png"))
    a = p.parse_args(argv)
    weighted = []
    for item in a.auto_weights:
        w, _, d = item.partition("=")
        weighted.append((float(w), Path(d)))
    points, curves = collect(a.runs, weighted)
    tasks = [t for t in COMPOSED if t in points]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 4.2 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, (key, judge) in enumerate(JUDGES):
            ax = axes[i][j]
            col = 1 + j
            named: dict[tuple[float, float], list[str]] = {}  # methods with the same knobs land on one point
            for method, v in points[task].items():
                if method != "auto":
                    named.setdefault((v[0], v[col]), []).append(method)
            for (x, y), methods in named.items():
                ax.scatter(x, y, color="0.4")
                ax.annotate(" = ".join(methods), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            c = curves.get(task, [])
            if c:
                ax.plot([x[1] for x in c], [x[2 + j] for x in c], "o-", color="tab:red", label="auto, placement weight")
                for w, iou, *acc in c:
                    ax.annotate(f"w={w:g}", (iou, acc[j]), fontsize=7, color="tab:red", xytext=(3, -9), textcoords="offset points")
            ax.set_xlabel("placement IoU ↑")
            ax.set_ylabel(f"class accuracy ({judge}) ↑")
            ax.set_title(f"{TITLE[task]}: IoU against the class, {judge}", fontsize=9)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
            if c:
                ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print("| task | method | placement weight | IoU | class acc: classifier / NN |")
    print("|---|---|---|---|---|")
    for task in tasks:
        for method, v in points[task].items():
            if method != "auto":
                print(f"| {TITLE[task]} | {method} | bench | {v[0]:.3f} | {v[1]:.3f} / {v[2]:.3f} |")
        for w, iou, c1, c2 in curves.get(task, []):
            print(f"| {TITLE[task]} | auto | {w:g} | {iou:.3f} | {c1:.3f} / {c2:.3f} |")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
