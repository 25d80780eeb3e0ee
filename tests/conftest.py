import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp: as ugd_core sets it

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


import importlib.util  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("flow_cost")``: a script of benchmarks/ as a module (registered in sys.modules, where its
    dataclasses resolve their annotations; its sibling imports resolve from benchmarks/ as when it is run)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    return load


# The longest test files first (measured with --durations=0 on the 2-core machine: the browser file about 50 s, the
# Ray files 25 s each, the every-preset files 12-15 s). `.ci/run` gives two xdist workers one file at a time
# (--dist loadfile), in collection order; longest first keeps a worker from starting a long file while the other
# has nothing left, so both finish together (longest-processing-time-first scheduling). Order only: no test changes.
LONGEST_FIRST = (
    "tests/test_ui_browser.py",
    "tests/test_distributed.py",
    "tests/test_tune.py",
    "ugd_plugins/stable_diffusion/tests/test_every_preset.py",
    "ugd_plugins/digits/tests/test_every_preset_digits.py",
    "tests/test_tune_digits.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
