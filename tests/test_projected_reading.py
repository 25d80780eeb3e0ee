"""benchmarks/projected_reading.py: pilot seeds only; its AUC is the rank statistic it names; a projection at a
noise level the denoiser removes exactly gives the image back."""

import math

import pytest
import torch


def test_reported_seeds_are_refused(load_benchmark):
    with pytest.raises(SystemExit, match="pilot seeds are 500-999"):
        load_benchmark("projected_reading").main(["--seeds", "1000"])


def test_auc_ranks_wrong_samples_above_right_ones_with_ties_half(load_benchmark):
    auc = load_benchmark("projected_reading").auc
    wrong = torch.tensor([True, True, False, False])
    assert auc(torch.tensor([3.0, 2.0, 1.0, 0.0]), wrong) == 1.0
    assert auc(torch.tensor([0.0, 1.0, 2.0, 3.0]), wrong) == 0.0
    assert auc(torch.tensor([1.0, 1.0, 1.0, 1.0]), wrong) == 0.5
    assert auc(torch.tensor([2.0, 0.0, 1.0, 1.0]), wrong) == 0.5  # one pair above, one below per wrong sample
    assert math.isnan(auc(torch.tensor([1.0, 2.0]), torch.tensor([False, False])))  # no wrong sample to rank


def test_the_projection_inverts_the_noising_when_the_denoiser_predicts_the_noise(load_benchmark):
    """x0_hat = (z - sqrt(1 - a) eps) / sqrt(a) of z = sqrt(a) x + sqrt(1 - a) n: an oracle eps = n returns x."""
    from types import SimpleNamespace

    mod = load_benchmark("projected_reading")
    abar = torch.linspace(0.99, 0.01, 50)
    x = torch.rand(3, 1, 4, 4) * 1.6 - 0.8
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))

    def eps(z, t, cond):  # type: ignore[no-untyped-def]
        assert int(t[0]) == int((abar - 0.5).abs().argmin())
        return noise

    out = mod.projected(SimpleNamespace(scheduler=SimpleNamespace(alphas_cumprod=abar), eps=eps), x, 0.5, seed=11)
    assert torch.allclose(out, x, atol=1e-5)


@pytest.mark.slow
def test_a_short_run_reports_one_auc_per_reading(load_benchmark):
    result = load_benchmark("projected_reading").main(["--seeds", "500", "--samples", "2", "--cases", "1", "--steps", "2"])
    assert list(result) == ["x", "a=0.5", "a=0.2"]
