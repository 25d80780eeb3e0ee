"""Strength schedules over the sampling chain (s(t) in SPEC.md, TFG's increase/decrease)."""

from __future__ import annotations

from typing import Callable, Sequence, Union

ScheduleLike = Union[str, Callable[[int, float], float]]


def schedule_values(schedule: ScheduleLike, timesteps: Sequence[int], alpha_bars: Sequence[float]) -> list[float]:
    """Multiplier of a strength at every step of the chain.

    constant: 1; sqrt_1m_abar: sqrt(1 - a_t) (the paper folds it into s(t));
    increase: proportional to a_t and decrease: proportional to sqrt(1 - a_t),
    each rescaled to average 1 over the chain (TFG, Ye et al. 2024);
    a callable gets (t, a_t).
    """
    a = [float(x) for x in alpha_bars]
    if callable(schedule):
        return [float(schedule(int(t), at)) for t, at in zip(timesteps, a)]
    if schedule == "constant":
        return [1.0] * len(a)
    if schedule == "sqrt_1m_abar":
        return [(1 - at) ** 0.5 for at in a]
    if schedule == "increase":
        raw = a
    elif schedule == "decrease":
        raw = [(1 - at) ** 0.5 for at in a]
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    mean = sum(raw) / len(raw)
    return [r / mean if mean > 0 else 1.0 for r in raw]


def in_window(window: tuple[float, float], step: int, num_steps: int) -> bool:
    """Whether step ``step`` (0 = noisiest) lies in the fraction-of-chain window [start, end)."""
    lo, hi = window
    frac = step / num_steps
    return lo <= frac < hi
