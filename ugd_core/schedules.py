"""Strength schedules over the sampling chain (the multiplier of a strength at each step), and
the diffusers noise schedulers the sampler can step with, by name."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence, Union

from .errors import UgdError
from .params import closest

ScheduleLike = Union[str, Callable[[int, float], float]]
SCHEDULES = ("constant", "sqrt_1m_abar", "increase", "decrease", "abar_normalized")


def schedule_values(schedule: ScheduleLike, timesteps: Sequence[int], alpha_bars: Sequence[float], alpha_bars_prev: Sequence[float]) -> list[float]:
    """Multiplier of a strength at every step of the chain (a_t = alpha_bar_t, a_prev = alpha_bar of the step's target).

    constant: 1; sqrt_1m_abar: sqrt(1 - a_t), unnormalised (the paper's s(t) folding; TFG's gamma 'decrease');
    increase: alpha_t = a_t / a_prev and decrease: beta_t = 1 - a_t / a_prev, each rescaled to mean 1
    over the chain (TFG, methods/tfg.py:48-66: rho_t = rho * alpha_t * n / sum alpha);
    abar_normalized: a_t rescaled to mean 1; a callable gets (t, a_t).
    """
    a = [float(x) for x in alpha_bars]
    if callable(schedule):
        return [float(schedule(int(t), at)) for t, at in zip(timesteps, a)]
    if schedule == "constant":
        return [1.0] * len(a)
    if schedule == "sqrt_1m_abar":
        return [(1 - at) ** 0.5 for at in a]
    if schedule == "increase":
        raw = [at / ap for at, ap in zip(a, alpha_bars_prev)]
    elif schedule == "decrease":
        raw = [1 - at / ap for at, ap in zip(a, alpha_bars_prev)]
    elif schedule == "abar_normalized":
        raw = a
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    mean = sum(raw) / len(raw)
    return [r / mean for r in raw] if mean > 0 else [0.0] * len(raw)  # all zero (a one-step flow chain at sigma = 1): none


def in_window(window: tuple[float, float], step: int, num_steps: int) -> bool:
    """Whether step ``step`` (0 = noisiest) lies in the fraction-of-chain window [start, end)."""
    lo, hi = window
    frac = step / num_steps
    return lo <= frac < hi


SCHEDULER_ALIASES = {
    "dpm++": "DPMSolverMultistepScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "ddpm": "DDPMScheduler",
    "dpm++-sde": "DPMSolverMultistepScheduler",
}
# scheduler settings an alias sets on top of the backbone's: DPM-Solver++'s stochastic (SDE) form, whose steps draw
# noise (Lu et al. 2022, DPM-Solver++, sec. 5; diffusers' algorithm_type="sde-dpmsolver++")
SCHEDULER_OPTIONS: dict[str, dict[str, Any]] = {"dpm++-sde": {"algorithm_type": "sde-dpmsolver++"}}


def scheduler_options(name: str) -> dict[str, Any]:
    """The settings the alias ``name`` puts on its scheduler class (none for a class name or a plain alias)."""
    return dict(SCHEDULER_OPTIONS.get(name, {}))


def step_takes_noise(scheduler: Any) -> bool:
    """Whether a diffusers scheduler's step adds noise that it takes from the caller as ``variance_noise``
    (what the spherical forward step turns). Diffusers has no flag for it, so it is probed: one step from two
    copies, with two different noises, on a tiny zero sample; the scheduler itself is left as it was."""
    import copy

    import torch

    if "variance_noise" not in inspect.signature(scheduler.step).parameters:
        return False
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(2)
    x = torch.zeros(1, 1, 1, 1)
    out = [copy.deepcopy(probe).step(x, probe.timesteps[0], x, variance_noise=x + v).prev_sample for v in (0.0, 1.0)]
    return not torch.equal(out[0], out[1])


def scheduler_class(name: str) -> Any:
    """The diffusers scheduler class for ``SamplerConfig.scheduler`` (a class name or an alias);
    UgdError naming the closest one otherwise. ``ddim`` (ugd's own exact DDIM) is not resolved here."""
    import diffusers

    full = SCHEDULER_ALIASES.get(name, name)
    cls = getattr(diffusers, full, None) if full.endswith("Scheduler") and not full.startswith("Flax") else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        known = ["ddim", *SCHEDULER_ALIASES, *(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("Flax"))]
        raise UgdError(
            f"scheduler={name!r} is not a diffusers scheduler{closest(name, known)}; use ddim (the default), "
            f"an alias ({', '.join(SCHEDULER_ALIASES)}) or a class name such as DPMSolverMultistepScheduler"
        )
    return cls


@functools.lru_cache(maxsize=None)
def scheduler_draws_noise(name: str) -> bool:
    """Whether the scheduler ``name`` (its class defaults and the alias's settings) steps with noise it takes
    as ``variance_noise`` (:func:`step_takes_noise`)."""
    return step_takes_noise(scheduler_class(name)(**scheduler_options(name)))
