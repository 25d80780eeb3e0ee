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


@pytest.mark.slow
def test_sd_default_runs_on_cpu_tiny_configs(load_benchmark):
    """benchmarks/sd_default.py: the cost rows and the loss-scale rows, tiny SD 1.5, 2 steps; on the CPU a rerun
    is the same bit for bit, and a float16 guide's loss scale moves the image by less than an 8-bit level."""
    out = load_benchmark("sd_default").main(["--device", "cpu", "--models", "sd15", "--knobs", "on", "--steps", "2",
                                             "--scale-steps", "2", "--guide-dtype", "fp16"])
    assert [r["preset"] for r in out["cost"]] == ["unguided", "auto", "ugd"] and all(r["finite"] for r in out["cost"])
    assert [r["scale"] for r in out["scale"]] == ["1 (rerun)", "1e-3", "1e3"]
    assert out["scale"][0]["max_abs_diff"] == 0 and all(r["max_abs_diff"] < 2 / 255 for r in out["scale"])
