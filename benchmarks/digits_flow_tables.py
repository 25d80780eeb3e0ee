"""The digits bench's tables on another digits backbone (``digits-flow`` by default) beside the DDPM's.

    .venv/bin/python benchmarks/digits_flow_tables.py --backbones digits,digits-flow --tasks label \
        --methods unguided,forward+backward+recurrence --seeds 1000,1001,1002 --samples 2 --out bench-out/digits-flow

Each cell is the bench's own (``DigitsBench.run_cell``: same cases, seeds, scoring by both judges, FID in the
evaluator's feature space against class-balanced held-out digits); only the backbone the cells sample from
changes. Writes ``<out>/<backbone>.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="digits,digits-flow")
    p.add_argument("--tasks", default="label")
    p.add_argument("--methods", default="unguided,forward+backward+recurrence")
    p.add_argument("--seeds", default="1000,1001,1002")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench-out/digits-flow")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ugd_core.registry import get_registry
    from ugd_digits.bench import aggregate, make_suite, markdown_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reg = get_registry()
    everything = {}
    for name in args.backbones.split(","):
        bench = make_suite(samples=args.samples, cases=args.cases, seeds=args.seeds, steps=str(args.steps), tasks=args.tasks,
                           methods=args.methods)
        bench._backbone = reg.build("backbone", name, {}, device="cpu")
        results, t0 = [], time.time()
        for cell in bench.cells():
            r = bench.run_cell(cell)
            r.pop("_images")
            results.append(r)
            print(name, cell["task"], cell["method"], cell["seed"], f"{time.time() - t0:.0f}s", flush=True)
        rows = aggregate(results)
        (out / f"{name}.md").write_text(f"backbone `{name}`\n\n" + markdown_table(rows, bench) + "\n")
        everything[name] = results
        print((out / f"{name}.md").read_text(), flush=True)
    (out / "results.json").write_text(json.dumps(everything, indent=1, default=str))


if __name__ == "__main__":
    main()
