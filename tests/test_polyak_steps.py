"""benchmarks/polyak_steps.py: pilot seeds only; the script runs end to end (slow)."""

import pytest


def test_reported_seeds_are_refused_before_any_work(load_benchmark, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_benchmark("polyak_steps").main(["--seeds", "1059"])
    assert exit_.value.code == 2 and "pilot seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_polyak_steps_runs(load_benchmark):
    rows = load_benchmark("polyak_steps").main(["--seeds", "638", "--samples", "1", "--steps", "3"])
    assert [(r["task"], r["candidate"], r["guide"]) for r in rows][:2] == [("inpaint alone", "auto", "inpaint"),
                                                                          ("inpaint alone", "auto + polyak", "inpaint")]
    assert len(rows) == 6 and all(r["loss"] == r["loss"] for r in rows)
    assert rows[0]["first"] != rows[0]["first"] and 0 <= rows[1]["last"] <= 1  # auto never shortens; polyak reports shares
