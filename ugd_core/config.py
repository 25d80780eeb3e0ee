"""Sampler settings: every knob of the universal-guidance loop in one dataclass.

Presets (``ugd``, ``dps``, ``freedom``, ...) are nothing but named sets of these
values; a tuned set saved to a JSON file is a preset like any other.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UgdError
from .params import closest
from .schedules import SCHEDULES, ScheduleLike, scheduler_class, scheduler_draws_noise


def strength_limit(forward_on: str) -> float:
    """The largest ``forward_strength`` a forward step on ``forward_on`` takes: 1 on the sphere (DSG's guidance rate,
    a full turn of the step's noise), else no limit."""
    return 1.0 if forward_on == "sphere" else math.inf


@dataclass
class SamplerConfig:
    """Knobs of Algorithm 1 (docs/algorithm.md gives each knob's units). Windows are fractions of the
    chain: (0, 1) = every step, (0, 0.5) = the first (noisiest) half.
    """

    num_steps: int = 50
    eta: float = 0.0  # DDIM stochasticity; 0 = deterministic, 1 = ancestral (as diffusers' DDIMScheduler.step)
    cfg_scale: float = 7.5  # classifier-free guidance for text backbones (ignored by others)
    # ddim = ugd's exact DDIM (as diffusers' DDIMScheduler.step); else a diffusers scheduler class name or an
    # alias (dpm++, dpm++-sde, dpmsolver, unipc, euler, euler-a, ddpm) built from the backbone's scheduler config
    scheduler: str = "ddim"

    # forward guidance: the step s(t) * grad_{z_t} loss(x0_hat(z_t))   (TFG's rho, DPS's zeta, FreeDoM's rho)
    forward_strength: float = 0.0
    forward_schedule: ScheduleLike = "sqrt_1m_abar"
    forward_window: tuple[float, float] = (0.0, 1.0)
    forward_normalize: str = "none"  # none | grad (unit per-sample gradient RMS) | loss (divide by sqrt(loss), DPS)
    forward_input: str = "x0"  # x0 = universal guidance; zt = the guide applied to the noisy z_t (classifier guidance)
    # where the step lands: eps (eps += step, universal guidance) | z_prev (z_{t-1} -= step: DPS, FreeDoM, LGD)
    # | z_t (a step on z_t carried to z_{t-1} by 1/sqrt(alpha_t), alpha_t = a_t / a_prev: TFG)
    # | sphere (z_{t-1}'s noise sigma_t n is turned toward -grad by the rate s(t) in [0, 1] and kept on its sphere
    # of radius sqrt(d) sigma_t, so only the gradient's direction counts: DSG; needs DDIM with eta > 0, or a scheduler whose step takes
    # the noise it adds as variance_noise, such as dpm++-sde)
    forward_on: str = "eps"
    # no forward step where a_t < this noise level: the z_t gradient carries 1 / sqrt(a_t) through x0_hat,
    # so at the noisiest steps of a cosine schedule (a_t ~ 1e-6) one step throws z far off; in units of a_t,
    # so the same at any step count (0 = off)
    forward_min_abar: float = 0.0

    # scale-free guidance: each guide's loss divided by the per-sample RMS of its own gradient (held constant)
    # before the weighted sum, so a loss multiplied by any c > 0 guides identically and ``weight`` is a
    # guide's share of the step: none | grad | first (each r_i held from the run's first evaluation, so a guide whose
    # loss is met takes a shrinking share) | peak (each gradient divided by the largest r_i of the run, the loss by
    # its own r_i: a guide's share r_i / max r_i shrinks as its gradient does, down to guide_share_floor) | met (grad,
    # and with several guides a guide whose own loss is below guide_met_below times its first loss in the run yields
    # its share in proportion to what is left, relative to the least-met guide: HeldScales.shares)
    guide_normalize: str = "none"
    guide_share_floor: float = 0.0
    guide_met_below: float = 0.01

    # backward guidance: m optimiser steps on delta minimising loss(x0_hat + delta)   (TFG's mu, N_iter)
    backward_steps: int = 0
    # m at the chain's last step, whose x0_hat + delta is the image itself (nothing re-noises it after);
    # 0 = backward_steps there too. Only where backward guidance is on at that step (its window)
    backward_final_steps: int = 0
    backward_lr: float = 0.1
    backward_optimizer: str = "sgd"  # sgd | adam
    # none | grad: unit-RMS gradient per sample, lr in x0 units per step | polyak: grad's step, each guide's part no
    # longer than its own Polyak step l_i g_i / ||g_i||^2 (what zeroes its loss to first order, taking its minimum as 0):
    # lr is then a cap, and a guide near its zero steps to it rather than past it (scale-free like grad)
    backward_normalize: str = "none"
    # with several guides (needs guide_normalize and backward_normalize=grad): share (the guides share one step
    # of length lr) | add (the step's length is lr * RMS(sum_i w_i g_i / r_i) / max_i w_i: each guide steps about
    # as far as it would alone where the guides' gradients are orthogonal); one guide: the same step either way
    backward_compose: str = "share"
    # > 0: each backward step is line-searched per sample, kept only where the loss falls (backward_merit), else halved up to
    # this many times (a sample whose loss stops falling stops); needs backward_optimizer=sgd (0 = off)
    backward_backtrack: int = 0
    # the halvings at the chain's last step, whose x0_hat + delta is the image itself (nothing re-noises it after): a
    # squared error's residual shorter than the step is met only by shorter trials; 0 = backward_backtrack there too; only
    # where the line search is on (backward_backtrack > 0), as the final steps only where backward guidance is
    backward_final_backtrack: int = 0
    # what the line search compares, with guide_normalize=grad: point (sum_i w_i l_i / r_i with each r_i at the
    # point scored: for one guide l / RMS(grad l), which a step can lower while raising l) | start (each r_i held
    # at the search's start x0_hat: one fixed function per search, for one guide the raw loss) | pareto (point's,
    # and no guide's own loss may rise) | progress (point's, and sum_i w_i l_i / l_i0 may not rise, l_i0 the
    # guide's own loss at its first evaluation in the run: a guide far below where it started may rise a little
    # where another falls by more of its own start; for one guide the same comparisons as pareto)
    backward_merit: str = "point"
    # with pareto: how far a trial may raise each guide's own loss, in units of that guide's own loss at its first
    # evaluation in the run, l_i' <= l_i + slack * l_i0 (0 = not at all: pareto as it is); a saturated guide's hair-
    # thin rise no longer blocks a step that another guide needs, and a guide can give back at most slack of its
    # start per trial; scale-free like the other merits
    backward_merit_slack: float = 0.0
    # how the compared loss's terms m_i (each guide's w_i l_i / r_i) add up: absolute (sum_i m_i must fall) |
    # relative (sum_i w_i log(m_i' / m_i) < 0: each guide's term in proportion to itself, so a saturated guide
    # whose term is large cannot outvote the others' relative gains; for one guide the same test); needs an
    # additive smoothing_reduce (mean); a non-positive term counts as met (the dtype's tiny)
    backward_merit_scale: str = "absolute"
    backward_schedule: ScheduleLike = "constant"
    backward_window: tuple[float, float] = (0.0, 1.0)
    # where delta lands: eps (eps re-derived at fixed z_t so that x0(z_t, eps) = x0_hat + delta: universal
    # guidance's backward step) | x0 (x0_hat += delta with eps kept: MPGD, TFG's Delta_0)
    backward_on: str = "eps"

    # per-step self-recurrence (TFG's N_recur); 1 = none
    recurrence: int = 1
    recurrence_window: tuple[float, float] = (0.0, 1.0)

    # Gaussian smoothing of the guide's input (TFG's gamma, LGD's Monte-Carlo samples)
    smoothing_std: float = 0.0
    smoothing_schedule: ScheduleLike = "constant"
    smoothing_probes: int = 1
    smoothing_reduce: str = "mean"  # mean of the probes' losses | log_mean_exp: -log mean exp(-loss) (LGD, TFG)
    smoothing_shared: bool = False  # one set of probes per step, shared by forward and backward guidance (TFG)

    # gradient estimate for guides with differentiable = False
    zo_probes: int = 8
    zo_std: float = 0.05

    # project backward guidance's iterate x0_hat + delta onto the data range [-1, 1] at its start, after each
    # step and at the end, as the official code (pixel backbones); forward guidance sees the raw x0_hat
    clip_x0: bool = False

    # precision and memory of the backbone's passes (applied by ``Backbone.configure`` where the
    # backbone has it; see docs/algorithm.md): dtype auto = the backbone's own
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    grad_checkpointing: bool = False  # recompute the denoiser's activations in guided backward passes
    vae_slicing: bool = False  # decode one image at a time
    vae_tiling: bool = False  # decode in overlapping tiles
    attention_slicing: bool = False  # attention in slices (SDPA is used where torch has it)
    # the backbone's and guides' conv weights in channels-last (NHWC) layout: oneDNN's faster convolutions on
    # CPU; not bit-identical to NCHW (last-bit differences), so a run's record says which layout made it
    channels_last: bool = False

    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UgdError for values the sampler cannot use."""
        for f in fields(self):  # types first: a text or a fraction where a number or a count belongs fails here, not mid-run
            value, kind = getattr(self, f.name), f.type
            if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise UgdError(f"{f.name} must be a whole number, got {value!r}")
            if kind == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)):
                raise UgdError(f"{f.name} must be a finite number, got {value!r}")
            if kind == "bool" and not isinstance(value, bool):
                raise UgdError(f"{f.name} must be true or false, got {value!r}")
            if kind == "str" and not isinstance(value, str):
                raise UgdError(f"{f.name} must be a text, got {value!r}")
        minimums = {"num_steps": (1, ""), "recurrence": (1, " (1 = no recurrence)"), "smoothing_probes": (1, ""), "backward_steps": (0, ""), "backward_final_steps": (0, " (0 = backward_steps)"), "forward_min_abar": (0.0, ""), "backward_backtrack": (0, " (0 = no line search)"), "backward_final_backtrack": (0, " (0 = backward_backtrack)"), "backward_merit_slack": (0.0, " (0 = pareto's own test)")}
        for name, (low, note) in minimums.items():
            if getattr(self, name) < low:
                raise UgdError(f"{name} must be >= {low}{note}, got {getattr(self, name)}")
        choices = {
            **dict.fromkeys(("forward_schedule", "backward_schedule", "smoothing_schedule"), SCHEDULES),  # or a callable
            "forward_normalize": ("none", "grad", "loss"),
            "guide_normalize": ("none", "grad", "first", "peak", "met"),
            "backward_normalize": ("none", "grad", "polyak"),
            "backward_compose": ("share", "add"),
            "backward_merit": ("point", "start", "pareto", "progress"),
            "backward_merit_scale": ("absolute", "relative"),
            "forward_input": ("x0", "zt"),
            "forward_on": ("eps", "z_prev", "z_t", "sphere"),
            "backward_on": ("eps", "x0"),
            "smoothing_reduce": ("mean", "log_mean_exp"),
            "backward_optimizer": ("sgd", "adam"),
            "dtype": ("auto", "fp32", "fp16", "bf16"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if not callable(value) and value not in allowed:
                raise UgdError(f"{name}={str(value)!r} is not one of {', '.join(allowed)}{closest(str(value), list(allowed))}")
        if self.forward_on == "sphere" and not callable(self.forward_strength) and not 0.0 <= self.forward_strength <= strength_limit(self.forward_on):
            raise UgdError(f"forward_strength={self.forward_strength:g} is DSG's guidance rate with forward_on=sphere: it must lie in "
                           "[0, 1] (1 turns the step's noise fully toward the guides; only the gradient's direction counts, so a "
                           "larger value has nothing to scale)")
        if not 0.0 <= self.eta <= 1.0:  # DDIM eq. 16: above 1, sigma_t^2 can pass 1 - a_prev and the step adds more noise than is left
            raise UgdError(f"eta must lie in [0, 1] (DDIM: 0 deterministic, 1 ancestral, as DDPM), got {self.eta:g}")
        if not 0.0 <= self.guide_share_floor <= 1.0:
            raise UgdError(f"guide_share_floor must lie in [0, 1] (a met guide's smallest share; 1 = guide_normalize=grad), "
                           f"got {self.guide_share_floor}")
        if not 0.0 < self.guide_met_below <= 1.0:
            raise UgdError(f"guide_met_below must lie in (0, 1] (a guide counts as met below this fraction of its first loss), "
                           f"got {self.guide_met_below}")
        if self.guide_share_floor > 0 and self.guide_normalize != "peak":
            raise UgdError(f"guide_share_floor={self.guide_share_floor} is the least share of a fading guide: it needs "
                           f"guide_normalize=peak, got guide_normalize={self.guide_normalize}")
        if self.backward_compose == "add" and (self.guide_normalize == "none" or self.backward_normalize != "grad"):
            raise UgdError("backward_compose=add sums the guides' unit-RMS steps: it needs guide_normalize (grad, first, peak or met) "
                           f"and backward_normalize=grad, got guide_normalize={self.guide_normalize}, backward_normalize={self.backward_normalize}")
        if self.backward_merit == "start" and self.guide_normalize == "peak":
            raise UgdError("backward_merit=start holds each guide's normaliser over a line search, but guide_normalize=peak divides "
                           "each loss by the normaliser of the point it scores; use guide_normalize=grad, or backward_merit=point")
        if self.backward_merit_slack > 0 and self.backward_merit != "pareto":
            raise UgdError(f"backward_merit_slack={self.backward_merit_slack:g} loosens backward_merit=pareto's test, but backward_merit is "
                           f"{self.backward_merit}; use backward_merit=pareto, or backward_merit_slack=0")
        if self.backward_merit_scale == "relative" and self.smoothing_reduce != "mean":
            raise UgdError("backward_merit_scale=relative compares each guide's term of the loss, which smoothing_reduce="
                           f"{self.smoothing_reduce} does not keep apart; use smoothing_reduce=mean or backward_merit_scale=absolute")
        if self.backward_normalize == "polyak" and self.smoothing_reduce != "mean":
            raise UgdError("backward_normalize=polyak shortens each guide's part of the step by its own loss, which smoothing_reduce="
                           f"{self.smoothing_reduce} does not keep apart; use smoothing_reduce=mean or backward_normalize=grad")
        if self.backward_backtrack > 0 and self.backward_optimizer != "sgd":
            raise UgdError("backward_backtrack > 0 line-searches plain gradient steps: set backward_optimizer=sgd, or backward_backtrack=0 for Adam")
        if self.forward_on == "sphere" and (self.eta <= 0 if self.scheduler == "ddim" else not scheduler_draws_noise(self.scheduler)):
            why = "DDIM with eta=0 draws no noise" if self.scheduler == "ddim" else f"scheduler={self.scheduler!r} takes no noise from the sampler"
            raise UgdError(f"forward_on='sphere' turns each step's noise, and {why}: use scheduler='ddim' with eta > 0 or a "
                           "stochastic solver (dpm++-sde), or forward_on='eps' (as --preset auto-eps does)")
        if self.scheduler != "ddim":
            scheduler_class(self.scheduler)
            for name, value in (("forward_on", self.forward_on), ("backward_on", self.backward_on)):
                if value != "eps" and not (name == "forward_on" and value == "sphere"):
                    raise UgdError(f"{name}={value!r} needs scheduler='ddim'; other schedulers take guidance through eps ({name}=eps)")
        for name in ("forward_window", "backward_window", "recurrence_window"):
            window = getattr(self, name)
            if (isinstance(window, (str, bytes)) or not isinstance(window, Sequence) or len(window) != 2
                    or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in window)):
                raise UgdError(f"{name} must be two fractions of the chain, start and end (the steps from start up to but not including end; 0 = noisiest), e.g. [0.2, 0.6]; got {window!r}")
            lo, hi = window
            if not 0.0 <= lo <= hi <= 1.0:
                raise UgdError(f"{name}={(lo, hi)} must satisfy 0 <= start <= end <= 1")
            setattr(self, name, (float(lo), float(hi)))

    def updated(self, **changes: Any) -> "SamplerConfig":
        """A copy with some knobs changed (unknown knob names are a UgdError)."""
        return replace(self, **check_knobs(changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (callable schedules are recorded by name only)."""
        d = asdict(self)
        for k, v in d.items():
            if callable(v):
                d[k] = f"<callable {getattr(v, '__name__', 'schedule')}>"
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplerConfig":
        """Inverse of :meth:`to_dict` (unknown keys are a UgdError)."""
        return cls(**check_knobs(d))  # windows given as lists become tuples in validate()


def knob_names() -> list[str]:
    """Every settable knob."""
    return [f.name for f in fields(SamplerConfig)]


def check_knobs(d: dict[str, Any]) -> dict[str, Any]:
    """Return ``d`` if every key is a knob, else raise UgdError naming the closest knob."""
    names = knob_names()
    for k in d:
        if k not in names:
            raise UgdError(f"unknown sampler setting {k!r}{closest(k, names)}; settings: {', '.join(names)}")
    return dict(d)


def load_preset_file(path: str | Path) -> tuple[str, dict[str, Any]]:
    """Read a preset file: JSON ``{"name": ..., "description": ..., "settings": {...}}``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UgdError(f"preset file {str(p)!r} does not exist; pass a preset name (`ugd list`) or a JSON file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UgdError(f"preset file {str(p)!r} is not readable JSON ({exc}); fix or regenerate it with `ugd tune`") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise UgdError(f"preset file {str(p)!r} has no 'settings' object; expected {{\"name\": ..., \"settings\": {{...}}}}")
    return str(data.get("name", p.stem)), check_knobs(data["settings"])


def resolve_preset(preset: str, registry: Any) -> tuple[str, dict[str, Any]]:
    """A preset file (``*.json`` or an existing path) or a registered preset name -> (name, settings)."""
    if preset.endswith(".json") or Path(preset).is_file():
        return load_preset_file(preset)
    return preset, dict(registry.get("preset", preset).settings)


def save_preset_file(path: str | Path, name: str, settings: dict[str, Any], description: str = "", **extra: Any) -> None:
    """Write a preset file that ``--preset FILE`` accepts."""
    Path(path).write_text(json.dumps(dict(name=name, description=description, settings=check_knobs(settings), **extra), indent=2))
