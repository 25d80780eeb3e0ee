"""Placement and class together, per sample, on a digits bench run's saved cells: for the composed tasks
(box + label, mask + label) each sample's IoU counts only where the asked class was drawn (a sample of
another class scores 0), by the held-out classifier and by the nearest-neighbour judge; beside it the plain
IoU (the bench's metric) and the class accuracy. The bench's tables report the same (``joint``, ``nn_joint``)
since this script was written; it reads the cells of runs made before, whose results lack them.

    python benchmarks/joint_metric.py bench-out/look29a bench-out/look29b --samples 2 --cases 4

Reads the images a run saved (``<out>/cells/<task>-<method>-<seed>-<hash>.pt``) and rebuilds each cell's
targets from the seed (``task_cases``); it runs no sampler. The run's own ``--param samples`` and ``cases``
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

    from ugd_digits.bench import DigitsBench, nonfinite, placement, ref_canvas, task_cases

    loaded = []
    for task, method, seed, path in cells:  # every layout checked before the judges are built
        images = torch.load(path)["_images"]
        cases = task_cases(task, seed, a.cases)
        if images.shape[0] != len(cases) * a.samples:
            p.error(f"{path.name}: {images.shape[0]} images, not cases x samples = {len(cases)} x {a.samples}: give the run's own values")
        loaded.append((task, method, images, cases))
    bench = DigitsBench(samples=a.samples, cases=a.cases)
    ev, judge = bench.evaluators, bench.nn_judge
    acc: dict[tuple[str, str], dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    for task, method, images, cases in loaded:
        labels = torch.tensor([c.label for c in cases for _ in range(a.samples)])
        refs = torch.cat([ref_canvas(c.ref) for c in cases for _ in range(a.samples)])
        bad = nonfinite(images)
        metric = placement(task, images, refs, ev)  # 0 for a non-finite sample
        hit = (ev.classify(images)[0] == labels) & ~bad
        nn_hit = judge.judge(images).correct(labels) & ~bad
        cell = acc[(task, method)]
        for key, value in (("metric", metric), ("hit", hit.float()), ("nn_hit", nn_hit.float())):
            cell[key].append(value.float())
    rows = []
    print("| task | method | IoU (the bench's metric) | IoU where the class is drawn: classifier / NN (else 0) | class acc: classifier / NN | samples |")
    print("|---|---|---|---|---|---|")
    for (task, method), cell in sorted(acc.items(), key=lambda kv: (kv[0][0], -float(torch.cat(kv[1]["metric"]).mean()))):
        metric, hit, nn_hit = (torch.cat(cell[k]) for k in ("metric", "hit", "nn_hit"))
        row = dict(task=task, method=method, metric=float(metric.mean()), joint=float((metric * hit).mean()),
                   nn_joint=float((metric * nn_hit).mean()), acc=float(hit.mean()), nn_acc=float(nn_hit.mean()), n=len(metric))
        rows.append(row)
        print(f"| {task} | {method} | {row['metric']:.3f} | {row['joint']:.3f} / {row['nn_joint']:.3f} | "
              f"{row['acc']:.2f} / {row['nn_acc']:.2f} | {row['n']} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
