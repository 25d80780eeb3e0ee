"""Strength schedules in closed form (``ugd_core.schedules.schedule_values``; docs/algorithm.md, "Schedules"):
``increase`` alpha_t = a_t / a_prev and ``decrease`` beta_t = 1 - alpha_t, each rescaled to mean 1 over the chain
(TFG, methods/tfg.py:48-66: rho_t = rho alpha_t n / sum alpha); ``abar_normalized`` a_t rescaled to mean 1;
``sqrt_1m_abar`` sqrt(1 - a_t), not rescaled (the paper's s(t) folding)."""

import pytest

from ugd_core.schedules import schedule_values

T, A, A_PREV = [900, 500, 100], [0.1, 0.5, 0.9], [0.5, 0.9, 1.0]


@pytest.mark.parametrize("name, raw", [
    ("increase", [0.1 / 0.5, 0.5 / 0.9, 0.9 / 1.0]),
    ("decrease", [1 - 0.1 / 0.5, 1 - 0.5 / 0.9, 1 - 0.9 / 1.0]),
    ("abar_normalized", A),
])
def test_rescaled_schedules_have_mean_one(name, raw):
    mean = sum(raw) / len(raw)
    assert schedule_values(name, T, A, A_PREV) == pytest.approx([r / mean for r in raw], abs=1e-12)


def test_sqrt_one_minus_abar_is_not_rescaled_and_constant_is_one():
    assert schedule_values("sqrt_1m_abar", T, A, A_PREV) == pytest.approx([(1 - a) ** 0.5 for a in A], abs=1e-12)
    assert schedule_values("constant", T, A, A_PREV) == [1.0, 1.0, 1.0]
