"""benchmarks/sd_cost.py runs end to end on the CPU with the tiny configs (slow: ResNet-50 guide)."""

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sd_cost_runs_on_cpu_tiny_configs(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sd_cost.py"
    spec = importlib.util.spec_from_file_location("sd_cost", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sd_cost"] = mod  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(mod)
    cells = mod.main(["--device", "cpu", "--models", "sd15,sdxl", "--dtypes", "bf16", "--sdxl-dtypes", "bf16",
                      "--modes", "unguided,forward", "--knobs", "on", "--steps", "2"])
    assert [(c.model, c.mode) for c in cells] == [("sd15", "unguided"), ("sd15", "forward"), ("sdxl", "unguided"), ("sdxl", "forward")]
    assert all(c.finite and c.ugd_s > 0 and c.floor_s > 0 and c.ugd_peak_gb is None for c in cells)
    table = capsys.readouterr().out
    assert "| sdxl | bf16 | on | forward |" in table and "tiny configs" in table
