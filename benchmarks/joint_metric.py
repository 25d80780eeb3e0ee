"""Placement and class together, per sample, on a digits bench run's saved cells: for the composed tasks
(box + label, mask + label) each sample's IoU counts only where the asked class was drawn (a sample of
another class scores 0), by the held-out classifier and by the nearest-neighbour judge; beside it the plain
IoU (the bench's metric) and the class accuracy. The bench's tables report the same (``joint``, ``nn_joint``)
since this script was written; it reads the cells of runs made before, whose results lack them.

    python benchmarks/joint_metric.py bench-out/look29a bench-out/look29b --samples 2 --cases 4

Reads the images a run saved (``<out>/cells/<task>-<method>-<seed>-<hash>.pt``), rebuilds each cell's
targets from the seed (``task_cases``) and scores them with the bench's own ``DigitsBench.score``; it runs no sampler. The run's own ``--param samples`` and ``cases``
must be given (the images are stored case-major, ``samples`` per case). It chooses nothing: reported seeds'
cells are read after their one look, for a table.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

TASKS = {"box": "box", "mask_label": "mask+label"}  # the cell files' task slug -> the bench's task name
KEYS = ("metric", "joint", "nn_joint", "class_accuracy", "nn_accuracy")  # DigitsBench.score's, averaged over a method's cells
CELL = re.compile(r"^(?P<task>[a-z_]+?)-(?P<method>.+)-(?P<seed>\d+)-[0-9a-f]+\.pt$")


def read_cells(out_dirs: list[Path]) -> list[tuple[str, str, int, Path]]:
    """(task, method, seed, path) of every composed-task cell saved under the given bench outputs."""
    found = []
    for out in out_dirs:
        for path in sorted((out / "cells").glob("*.pt")):
            m = CELL.match(path.name)
            if m and m["task"] in TASKS:
                found.append((TASKS[m["task"]], m["method"], int(m["seed"]), path))
    return found


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="+", type=Path, help="bench --out folders (with cells/)")
    p.add_argument("--samples", type=int, required=True, help="the run's --param samples")
    p.add_argument("--cases", type=int, required=True, help="the run's --param cases")
    a = p.parse_args(argv)
    missing = [str(o) for o in a.out if not (o / "cells").is_dir()]
    if missing:
        p.error(f"no cells/ folder in {', '.join(missing)}: give the --out folder of a `ugd bench digits` run")
    cells = read_cells(a.out)
    if not cells:
        p.error("no box or mask+label cells in the given folders: run the bench with --param tasks=box,mask+label")

    from ugd_digits.bench import DigitsBench, task_cases

    loaded = []
    for task, method, seed, path in cells:  # every layout checked before the judges are built
        images = torch.load(path)["_images"]
        cases = task_cases(task, seed, a.cases)
        if images.shape[0] != len(cases) * a.samples:
            p.error(f"{path.name}: {images.shape[0]} images, not cases x samples = {len(cases)} x {a.samples}: give the run's own values")
        loaded.append((task, method, images, cases))
    bench = DigitsBench(samples=a.samples, cases=a.cases)
    scored: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for task, method, images, cases in loaded:  # the bench's own scoring, joint columns included
        scored[(task, method)].append((len(images), bench.score(task, cases, images, a.samples)))
    rows = []
    for (task, method), cells_of in scored.items():
        n = sum(k for k, _ in cells_of)
        mean = {key: sum(k * out[key] for k, out in cells_of) / n for key in KEYS}  # over samples, cells of any size
        rows.append(dict(task=task, method=method, n=n, **mean))
    rows.sort(key=lambda r: (r["task"], -r["metric"]))
    print("| task | method | IoU (the bench's metric) | IoU where the class is drawn: classifier / NN (else 0) | class acc: classifier / NN | samples |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['method']} | {r['metric']:.3f} | {r['joint']:.3f} / {r['nn_joint']:.3f} | "
              f"{r['class_accuracy']:.2f} / {r['nn_accuracy']:.2f} | {r['n']} |", flush=True)
    return rows

if __name__ == "__main__":
    main()
