"""Rectified-flow (flow-matching) models as ugd backbones: one change of variables, no second sampler.

A rectified flow has x_sigma = (1 - sigma) x0 + sigma eps and its network predicts v = eps - x0
(diffusers ``FlowMatchEulerDiscreteScheduler.step``: prev = x + (sigma_next - sigma) v). Hence

    x0_hat = x - sigma v,        eps_hat = x + (1 - sigma) v.

With s = sqrt((1 - sigma)^2 + sigma^2), z = x / s and a = (1 - sigma)^2 / s^2, z = sqrt(a) x0 + sqrt(1 - a) eps
(the same eps): a VP latent at alpha_bar = a. One DDIM (eta = 0) step from a to a' maps back to
s' z' = (1 - sigma') x0_hat + sigma' eps_hat = x + (sigma' - sigma) v, the flow's Euler step. So a velocity
model enters ugd as an eps-predictor over the chain of its scheduler's sigmas (docs/algorithm.md, "Flow
models"), and forward/backward guidance and self-recurrence run unchanged. This is the
wrapper k-diffusion's ``external.py`` uses for other parameterisations, here for v = eps - x0.

Timesteps: the chain's timesteps are the scheduler's ``timesteps`` (1000 sigma, floats), and ``eps``
receives them as a float tensor; a backbone's ``velocity(x, t, cond)`` sees x in flow units and that t.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ugd_core.backbones import BackboneBase, at_least_fp32
from ugd_core.errors import UgdError
from ugd_core.sampler import NoiseSchedule


def alpha_bar_of_sigma(sigma: float) -> float:
    """a = (1 - sigma)^2 / ((1 - sigma)^2 + sigma^2): the VP alpha_bar with the flow's signal-to-noise ratio."""
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)


def sigma_of_alpha_bar(a: float) -> float:
    """The inverse: sigma = sqrt(1 - a) / (sqrt(a) + sqrt(1 - a))."""
    return (1 - a) ** 0.5 / (a**0.5 + (1 - a) ** 0.5)


def flow_scale(sigma: Tensor) -> Tensor:
    """s = sqrt((1 - sigma)^2 + sigma^2): x = s z."""
    return ((1 - sigma) ** 2 + sigma**2).sqrt()


class FlowSchedule:
    """A diffusers flow scheduler (``FlowMatchEulerDiscreteScheduler``) as ugd's sampling chain.

    ``timestep_kwargs(num_steps)`` gives the keyword arguments of the scheduler's ``set_timesteps``
    as the model's diffusers pipeline passes them (custom ``sigmas``, the resolution shift ``mu``);
    the default is ``num_inference_steps`` alone. The chain's a_t, a_prev are
    :func:`alpha_bar_of_sigma` of the scheduler's sigmas (its terminal 0 included: a = 1), and its
    timesteps the scheduler's (num_train_timesteps * sigma, as the pipelines feed the network).
    :meth:`from_sigmas` takes the sigmas as given (float64, without the scheduler's float32 rounding).
    """

    def __init__(self, scheduler: Any, timestep_kwargs: Callable[[int], dict[str, Any]] | None = None, num_train_timesteps: int | None = None):
        if scheduler is not None and (not hasattr(scheduler, "sigmas") or not hasattr(scheduler, "set_timesteps")):
            raise UgdError(f"{type(scheduler).__name__} is not a flow-matching scheduler; use diffusers' FlowMatchEulerDiscreteScheduler")
        self.scheduler = scheduler
        self.timestep_kwargs = timestep_kwargs or (lambda n: {"num_inference_steps": n})
        self.config = scheduler.config if scheduler is not None else {}
        self.num_train_timesteps = int(num_train_timesteps or scheduler.config.num_train_timesteps)
        self._given: Callable[[int], list[float]] | None = None
        self.table: tuple[Tensor, Tensor] = (torch.zeros(0), torch.zeros(0, dtype=torch.float64))

    @classmethod
    def from_sigmas(cls, sigmas: Callable[[int], list[float]], num_train_timesteps: int = 1000) -> "FlowSchedule":
        """A chain of the given sigmas (noisiest first, without the terminal 0) for each number of steps."""
        sched = cls(None, num_train_timesteps=num_train_timesteps)
        sched._given = sigmas
        return sched

    def sigmas(self, num_steps: int) -> tuple[list[float], list[float]]:
        """(timesteps, sigmas) of a chain of ``num_steps`` as the scheduler sets them (sigmas end with 0)."""
        if self._given is not None:
            sig = [float(s) for s in self._given(num_steps)]
            return [s * self.num_train_timesteps for s in sig], sig + [0.0]
        self.scheduler.set_timesteps(**self.timestep_kwargs(num_steps))
        return [float(t) for t in self.scheduler.timesteps], [float(s) for s in self.scheduler.sigmas]

    def noise_schedule(self, num_steps: int) -> NoiseSchedule:
        ts, sigmas = self.sigmas(num_steps)
        # the exact sigma of each timestep, for eps (the sampler hands t over as float32)
        self.table = (torch.tensor(ts, dtype=torch.float32), torch.tensor(sigmas[:-1], dtype=torch.float64))
        a = [alpha_bar_of_sigma(s) for s in sigmas]
        return NoiseSchedule(ts, a[:-1], a[1:])

    def sigma(self, t: Tensor) -> Tensor:
        """sigma of the float timesteps t [N] (float64): the chain's own where t is one of its timesteps,
        else t / num_train_timesteps. Tensor operations only (no host sync)."""
        if self.table[0].device != t.device:  # copied once per run: a host-to-device copy every step would stall the GPU queue
            self.table = tuple(x.to(t.device) for x in self.table)
        ts, sig = self.table
        t32 = t.to(torch.float32)
        hit = t32[:, None] == ts[None, :]
        own = (hit.to(torch.float64) * sig[None, :]).sum(1)
        return torch.where(hit.any(1), own, t32.double() / self.num_train_timesteps)


class FlowBackbone(BackboneBase):
    """A velocity model v(x, t, cond) on a rectified flow, as a VP eps-predictor (``Backbone`` protocol).

    ``velocity`` takes x in flow units (float32; cast it at the network's boundary) and the timestep
    t = ``num_train_timesteps`` * sigma (float tensor [N]) and returns v = eps - x0. ``decode`` maps a
    clean latent to the image a guide sees (identity for pixel flows). Subclasses (SD3, FLUX) override
    :meth:`velocity` and :meth:`condition` instead of passing callables.
    """

    is_latent = False
    prediction_type = "flow"

    def __init__(
        self,
        velocity: Callable[[Tensor, Tensor, Any], Tensor] | None,
        schedule: FlowSchedule,
        sample_shape: tuple[int, ...],
        decode: Callable[[Tensor], Tensor] | None = None,
        device: torch.device | str = "cpu",
    ):
        self._velocity = velocity
        self.scheduler = schedule
        self.sample_shape = tuple(sample_shape)
        self._decode = decode
        self.is_latent = decode is not None
        self.device = torch.device(device)
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # (z_t, t, x0_hat) of the latest pass

    def velocity(self, x: Tensor, t: Tensor, cond: Any) -> Tensor:
        if self._velocity is None:
            raise NotImplementedError("pass velocity= or override FlowBackbone.velocity")
        return self._velocity(x, t, cond)

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> Any:
        return prompt

    def configure(self, config: Any) -> None:
        if config.scheduler != "ddim":
            raise UgdError(f"scheduler={config.scheduler!r} on a flow backbone: flows step with scheduler=ddim "
                           "(DDIM with eta=0 is the flow's Euler step); drop --scheduler")
        super().configure(config)

    def sigma(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        """sigma [N, 1, ...] of the timesteps t (diffusers' flow timesteps are num_train_timesteps * sigma)."""
        return self.scheduler.sigma(t.to(self.device)).to(dtype).view(-1, *([1] * len(self.sample_shape)))

    def eps(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        """eps_hat(z_t) = x + (1 - sigma) v(x, t) with x = s z_t; x0_hat = x - sigma v is kept for
        :meth:`x0_at_pure_noise` (at sigma = 1, eps_hat = x carries no x0)."""
        wide = torch.promote_types(z_t.dtype, torch.float32)
        sigma = self.sigma(t, torch.float64)
        x = (z_t.to(sigma.dtype) * flow_scale(sigma)).to(wide)
        v = at_least_fp32(self.velocity(x, t, cond)).to(wide)
        sigma = sigma.to(wide)
        self._last = (z_t, t, x - sigma * v)
        return x + (1 - sigma) * v

    def x0_at_pure_noise(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        """x0_hat = x - sigma v (x - v at sigma = 1, where it is read) of the latest pass on this z_t (same storage), else of a new pass.

        Differentiable with respect to z_t when that pass recorded a graph and z_t requires grad."""
        last = self._last
        if last is None or last[0].data_ptr() != z_t.data_ptr() or last[0].shape != z_t.shape or not torch.equal(last[1], t):
            self.eps(z_t, t, cond)
            last = self._last
        x0 = last[2]
        return x0 if torch.is_grad_enabled() and z_t.requires_grad else x0.detach()

    def decode(self, z: Tensor) -> Tensor:
        return self._decode(z) if self._decode is not None else z


def velocity_from_eps_model(eps_fn: Callable[[Tensor, Tensor, Any], Tensor], alphas_cumprod: Tensor, schedule: FlowSchedule) -> Callable[[Tensor, Tensor, Any], Tensor]:
    """A VP eps-model (DDPM) as a velocity model, by the change of variables above in the inverse direction.

    v(x, t) = eps - x0 with z = x / s, a = a(sigma), eps = eps_fn(z, tau), x0 = (z - sqrt(1 - a) eps) / sqrt(a),
    tau the DDPM timestep whose alphas_cumprod is nearest to a (a chain of the DDPM's own DDIM alpha_bars,
    written as sigmas, hits them exactly). What the exactness test of the flow path runs on.
    """
    acp = alphas_cumprod.double()

    def velocity(x: Tensor, t: Tensor, cond: Any) -> Tensor:
        sigma = schedule.sigma(t).view(-1, *([1] * (x.dim() - 1)))
        a = (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)
        table = acp.to(x.device)
        tau = (table.view(1, -1) - a.view(-1, 1)).abs().argmin(dim=1)
        a = table[tau].view_as(sigma)
        z = x.double() / flow_scale(sigma)
        eps = eps_fn(z.to(x.dtype), tau, cond).double()
        x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
        return (eps - x0).to(x.dtype)

    return velocity
