"""benchmarks/polyak_steps.py: the share it reports is the weight ``polyak_shortened`` gives each guide's part;
pilot seeds only; the script runs end to end (slow)."""

import pytest
import torch

from ugd_core.sampler import polyak_shortened


def test_the_reported_share_is_the_weight_of_each_guides_part(load_benchmark):
    share_of_each = load_benchmark("polyak_steps").share_of_each
    parts = torch.randn(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    terms = torch.tensor([[0.5, 1e-4, 3.0], [0.0, 2.0, -1.0]])
    shares = share_of_each(terms, parts, 0.1)
    short, _ = polyak_shortened(terms, parts, 0.1, torch.ones(3))
    assert torch.allclose(short, (shares.view(2, 3, 1, 1, 1) * parts).sum(0))
    assert shares[1, 0] == 0 and shares[1, 2] == 0 and 0 < shares[0, 1] < 1  # a loss at or below 0 is met


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
