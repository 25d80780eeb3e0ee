"""benchmarks/sd_cost.py runs end to end on the CPU with the tiny configs (slow: ResNet-50 guide)."""

import pytest


@pytest.mark.slow
def test_sd_cost_runs_on_cpu_tiny_configs(capsys, load_benchmark):
    mod = load_benchmark("sd_cost")
    cells = mod.main(["--device", "cpu", "--models", "sd15,sdxl", "--dtypes", "bf16", "--sdxl-dtypes", "bf16",
                      "--modes", "unguided,forward", "--knobs", "on", "--steps", "2"])
    assert [(c.model, c.mode) for c in cells] == [("sd15", "unguided"), ("sd15", "forward"), ("sdxl", "unguided"), ("sdxl", "forward")]
    assert all(c.finite and c.ugd_s > 0 and c.floor_s > 0 and c.ugd_peak_gb is None for c in cells)
    table = capsys.readouterr().out
    assert "| sdxl | bf16 | on | forward |" in table and "tiny configs" in table
