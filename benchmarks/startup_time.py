"""Start-up time of the commands that should answer at once: `ugd list`, `ugd info`, `ugd --help` and a bad
`ugd generate` (its one-line error), here and in another source tree (e.g. an older commit), as ratios.

    git archive 5e1fd34 | tar -x -C /tmp/ugd-before     # the tree before the start-up work
    .venv/bin/python benchmarks/startup_time.py --before /tmp/ugd-before --repeat 5

Each command runs as its own process (`python -m cli.main ...`), both trees interleaved, so a busy machine
slows both alike; the table gives median wall and CPU seconds (user + sys: what an idle machine's wall time
would be, near enough) and the load average before and after. The other tree runs through PYTHONPATH, ahead
of this checkout's editable install; its plugins are found through the same installed entry points.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [["list"], ["info", "digit-box"], ["info", "digits-full"], ["--help"], ["generate", "--guide", "nope"]]
ROOT = Path(__file__).resolve().parents[1]


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that runs ``tree``'s cli and plugins (its folders first on sys.path)."""
    paths = [tree, *sorted(p for p in (tree / "ugd_plugins").iterdir() if (p / "pyproject.toml").exists())]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, paths)), HF_HUB_OFFLINE="1", COLUMNS="120")


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one ``python -m cli.main ARGS`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd="/tmp", capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other source tree (e.g. git archive of an older commit)")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    trees = {"before": tree_env(a.before), "after": tree_env(ROOT)}
    load = os.getloadavg()
    rows = []
    for args in COMMANDS:
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
        for _ in range(a.repeat):
            for name, env in trees.items():  # interleaved: both see the same load
                times[name].append(run_once(args, env))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        rows.append((" ".join(args), med))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load)}; after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; {a.repeat} runs each, medians")
    print("\n| command | wall before | wall after | ratio | CPU before | CPU after | ratio |\n|---|---|---|---|---|---|---|")
    for cmd, m in rows:
        (wb, cb), (wa, ca) = m["before"], m["after"]
        print(f"| `ugd {cmd}` | {wb:.2f} s | {wa:.2f} s | {wb / wa:.1f}x | {cb:.2f} s | {ca:.2f} s | {cb / ca:.1f}x |")


if __name__ == "__main__":
    main()
