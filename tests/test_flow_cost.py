"""benchmarks/flow_cost.py runs end to end on the CPU with the tiny SD3 / FLUX.1 configs, and its floor is faithful."""

import math


def test_flow_cost_runs_on_cpu_tiny_configs(capsys, load_benchmark):
    mod = load_benchmark("flow_cost")
    cells = mod.main(["--device", "cpu", "--models", "sd3,flux", "--modes", "unguided,forward", "--steps", "2"])
    assert [(c.model, c.mode) for c in cells] == [("sd3", "unguided"), ("sd3", "forward"), ("flux", "unguided"), ("flux", "forward")]
    for c in cells:
        assert c.finite and math.isfinite(c.ugd_s) and math.isfinite(c.floor_s) and c.ugd_s > 0 and c.floor_s > 0, c
        assert c.ugd_peak_gb is None and c.floor_peak_gb is None, c
        assert c.same and c.max_diff <= 1e-4, c  # the floor ends where ugd ends (fp32)
    table = capsys.readouterr().out
    assert "tiny configs" in table and "| flux | fp32 | forward |" in table and "unmeasured" in table
