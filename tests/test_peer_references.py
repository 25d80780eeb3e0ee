"""Each peer preset equals its published update, transcribed here from the paper and its code.

Closed-form Gaussian denoiser (data N(MU, S^2) per pixel), quadratic guide l(x) = ||x - Y||^2
(= -log p, the references' log-likelihood with the sign flipped), float64, Stable Diffusion's
scheduler config, the same z_t and the same noise. One step mid-chain and a whole 10-step
chain, to 1e-5. The transcriptions are equations, written independently of ugd's sampler;
file:line cite github.com/YWolfeee/Training-Free-Guidance (TFG) unless said otherwise.
TFG's code clamps x0_hat to [-1, 1] by default; the data here keep |x0_hat| < 1 (checked), so
the clamp is inactive on both sides.
"""

from __future__ import annotations

import math

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core.noise import make_generators, randn
from ugd_core.presets import PRESETS
from ugd_core.sampler import NoiseSchedule, UniversalGuidance
from ugd_core.guidance import as_guide_set
from ugd_core.testing import gaussian_backbone

MU, S, Y = 0.2, 0.3, -0.4
SHAPE, N, SEED, STEPS = (4, 2, 2), 3, 5, 10
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD)


def quadratic():
    return make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=Y)


class Reference:
    """The references' shared pieces: the chain, the denoiser, the DDIM step, the guide."""

    def __init__(self):
        sched = scheduler()
        self.acp = sched.alphas_cumprod.double()
        sched.set_timesteps(STEPS)
        # TFG diffusion/unet/huggingface.py:13-17: a_t at the scheduler's timesteps, a_prev the next one, then final_alpha_cumprod
        self.ts = [int(t) for t in sched.timesteps]
        self.a = [float(self.acp[t]) for t in self.ts]
        self.a_prev = self.a[1:] + [float(sched.final_alpha_cumprod)]
        self.gens = make_generators([SEED + i for i in range(N)])
        self.max_x0 = 0.0

    def noise(self) -> torch.Tensor:
        return randn(SHAPE, self.gens, torch.device("cpu"), torch.float64)

    def eps(self, z: torch.Tensor, i: int) -> torch.Tensor:
        a = self.a[i]
        return (1 - a) ** 0.5 * (z - a**0.5 * MU) / (a * S**2 + 1 - a)

    def x0(self, z: torch.Tensor, i: int) -> torch.Tensor:
        x0 = (z - (1 - self.a[i]) ** 0.5 * self.eps(z, i)) / self.a[i] ** 0.5
        self.max_x0 = max(self.max_x0, x0.abs().max().item())
        return x0

    @staticmethod
    def loss(x: torch.Tensor) -> torch.Tensor:
        return (x - Y).pow(2).flatten(1).sum(1)

    def sigma(self, i: int, eta: float = 1.0) -> float:
        a, ap = self.a[i], self.a_prev[i]
        return eta * ((1 - ap) / (1 - a) * (1 - a / ap)) ** 0.5

    def ddim(self, x0: torch.Tensor, eps: torch.Tensor, i: int, noise: torch.Tensor) -> torch.Tensor:
        # DDIM eq. 12 as TFG methods/base.py:90-101: sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma n
        ap, sig = self.a_prev[i], self.sigma(i)
        return ap**0.5 * x0 + (1 - ap - sig**2) ** 0.5 * eps + sig * noise

    def grad_zt(self, z: torch.Tensor, i: int, loss_of_x0) -> tuple[torch.Tensor, torch.Tensor]:
        """grad_{z_t} of loss_of_x0(x0_hat(z_t)) through the denoiser, and the loss."""
        zz = z.detach().requires_grad_(True)
        value = loss_of_x0(self.x0(zz, i))
        return torch.autograd.grad(value.sum(), zz)[0], value.detach()

    def increase(self) -> list[float]:
        # TFG methods/tfg.py:48-56 (freedom.py:11-19): alpha_t = a_t / a_prev, rescaled by n / sum
        alpha = [a / ap for a, ap in zip(self.a, self.a_prev)]
        return [x * len(alpha) / sum(alpha) for x in alpha]

    def renoise(self, z_prev: torch.Tensor, i: int) -> torch.Tensor:
        # TFG methods/base.py:120-122: z_t = sqrt(alpha_t) z_prev + sqrt(1 - alpha_t) n
        alpha = self.a[i] / self.a_prev[i]
        return alpha**0.5 * z_prev + (1 - alpha) ** 0.5 * self.noise()


def lme_loss(probes: list[torch.Tensor]):
    """-log (1/n) sum_j exp(-l(x + n_j)): TFG methods/tfg.py:30-33 (logsumexp - log n), LGD-MC (Song et al. 2023)."""
    return lambda x: math.log(len(probes)) - torch.logsumexp(torch.stack([-Reference.loss(x + p) for p in probes]), 0)


def dps_step(r: Reference, z, i, zeta):
    # Chung et al. 2023, Algorithm 1 lines 4-7 (DDPM ancestral step, the DDIM eta = 1 step written as the posterior mean):
    # x'_{i-1} = sqrt(alpha) (1 - a_prev) / (1 - a) x_i + sqrt(a_prev) beta / (1 - a) x0_hat + sigma z
    # x_{i-1} = x'_{i-1} - zeta_i grad ||y - A(x0_hat)||^2,  zeta_i = zeta' / ||y - A(x0_hat)||
    a, ap = r.a[i], r.a_prev[i]
    alpha = a / ap
    x0 = r.x0(z, i)
    x_prime = alpha**0.5 * (1 - ap) / (1 - a) * z + ap**0.5 * (1 - alpha) / (1 - a) * x0 + r.sigma(i) * r.noise()
    g, loss = r.grad_zt(z, i, Reference.loss)
    return x_prime - zeta / loss.sqrt().view(-1, 1, 1, 1) * g


def freedom_step(r: Reference, z, i, rho):
    # TFG methods/freedom.py:44-54 (Yu et al. 2023, Alg. 1 lines 4-8): x_prev = DDIM(x_t, eps) + rho_t grad log p(x0_hat)
    x_prev = r.ddim(r.x0(z, i), r.eps(z, i), i, r.noise())
    g, _ = r.grad_zt(z, i, Reference.loss)
    return x_prev - rho * r.increase()[i] * g


def lgd_step(r: Reference, z, i, strength, probes=4):
    # Song et al. 2023 LGD-MC; TFG methods/lgd.py:36 (probe std sqrt(1 - a_t)), :65 (logsumexp), :71 (x_prev += s * guidance).
    # TFG's lgd.py:67 divides the gradient by the probe count once more; the paper's log-mean-exp does not (followed here).
    mc = [(1 - r.a[i]) ** 0.5 * r.noise() for _ in range(probes)]
    x_prev = r.ddim(r.x0(z, i), r.eps(z, i), i, r.noise())
    g, _ = r.grad_zt(z, i, lme_loss(mc))
    return x_prev - strength * g


def dsg_step(r: Reference, z, i, rate):
    # Yang et al. 2024 eq. 10-11; DSG2024 Linear_Inverse_Problems/guided_diffusion/condition_methods.py:113-128 on the
    # DDIM eta = 1 step of its gaussian_diffusion.py:437-455: r = sqrt(c h w) sigma_t, d* = -r g / (||g|| + 1e-8),
    # d_sample = x_t - mean, mix = d_sample + rate (d* - d_sample), x_{t-1} = mean + r mix / (||mix|| + 1e-8).
    # DSG differentiates ||y - A(x0_hat)|| = sqrt(l): the same direction as grad l.
    ap, sig = r.a_prev[i], r.sigma(i)
    mean = ap**0.5 * r.x0(z, i) + (1 - ap - sig**2) ** 0.5 * r.eps(z, i)
    d_sample = sig * r.noise()
    g, _ = r.grad_zt(z, i, lambda x: Reference.loss(x).sqrt())
    radius = math.prod(SHAPE) ** 0.5 * sig
    norm = lambda v: v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # noqa: E731
    mix = d_sample + rate * (-radius * g / (norm(g) + 1e-8) - d_sample)
    return mean + radius * mix / (norm(mix) + 1e-8)


def mpgd_step(r: Reference, z, i, c):
    # He et al. 2023, Alg. 1 (w/o projection); TFG methods/mpgd.py:30-43: x0 += c grad log p(x0); eps kept
    eps, x0 = r.eps(z, i), r.x0(z, i)
    x = x0.detach().requires_grad_(True)
    x0 = x0 - c * torch.autograd.grad(Reference.loss(x).sum(), x)[0]
    return r.ddim(x0, eps, i, r.noise())


def tfg_step(r: Reference, z, i, rho, mu, gamma, probes=4, n_iter=1, n_recur=1):
    # Ye et al. 2024, Alg. 1; TFG methods/tfg.py:96-133
    sched = r.increase()
    for k in range(n_recur):
        std = gamma * (1 - r.a[i]) ** 0.5  # tfg.py:68-74 ('decrease' sigma schedule = sqrt(1 - a_t), unnormalised)
        mc = [std * r.noise() for _ in range(probes)]  # tfg.py:99, shared by Delta_t and Delta_0
        g, _ = r.grad_zt(z, i, lme_loss(mc))
        delta_t = -rho * sched[i] * g  # tfg.py:102-111 (grad of log p = -grad l)
        x0 = r.x0(z, i).detach()
        x = x0.clone()
        for _ in range(n_iter):  # tfg.py:118-123
            xg = x.detach().requires_grad_(True)
            x = x - mu * sched[i] * torch.autograd.grad(lme_loss(mc)(xg).sum(), xg)[0]
        delta_0 = x - x0
        alpha = r.a[i] / r.a_prev[i]
        z_prev = r.ddim(x0, r.eps(z, i), i, r.noise()) + delta_t / alpha**0.5 + delta_0 * r.a_prev[i] ** 0.5  # tfg.py:126-129
        if k < n_recur - 1:
            z = r.renoise(z_prev, i)
    return z_prev


def ugd_step(r: Reference, z, i, strength, lr, m=1, k=1):
    # Bansal et al. 2023, Algorithm 1, on DDIM eta = 0: forward eps_hat = eps + s(t) grad_{z_t} l(x0_hat), s(t) = s sqrt(1 - a_t)
    # (official stable-diffusion-guided/ldm/models/diffusion/ddim_with_grad.py:165-168); backward: m Adam steps (Kingma & Ba
    # 2015, Alg. 1: beta 0.9 / 0.999, eps 1e-8) on delta minimising l(x0_hat + delta), the iterate x0_hat + delta clamped to
    # [-1, 1] (official Guided_Diffusion_Imagenet/guided_diffusion/gaussian_diffusion.py:729-731,744,795,804);
    # eps_tilde = eps_hat - sqrt(a_t / (1 - a_t)) delta; z_prev = sqrt(a_prev) x0(eps_tilde) + sqrt(1 - a_prev) eps_tilde;
    # self-recurrence k times (Algorithm 1's inner loop) with the re-noising z_t = sqrt(alpha_t) z_prev + sqrt(1 - alpha_t) n.
    a, ap = r.a[i], r.a_prev[i]
    for rep in range(k):
        g, _ = r.grad_zt(z, i, Reference.loss)
        eps_hat = r.eps(z, i) + strength * (1 - a) ** 0.5 * g
        x0 = (z - (1 - a) ** 0.5 * eps_hat) / a**0.5
        delta, first, second = torch.zeros_like(x0), torch.zeros_like(x0), torch.zeros_like(x0)
        for n in range(1, m + 1):
            x = (x0 + delta).clamp(-1, 1).requires_grad_(True)
            grad = torch.autograd.grad(Reference.loss(x).sum(), x)[0]
            first, second = 0.9 * first + 0.1 * grad, 0.999 * second + 0.001 * grad**2
            delta = (x0 + delta - lr * (first / (1 - 0.9**n)) / ((second / (1 - 0.999**n)).sqrt() + 1e-8)).clamp(-1, 1) - x0
        eps_tilde = eps_hat - (a / (1 - a)) ** 0.5 * delta
        z_prev = ap**0.5 * (z - (1 - a) ** 0.5 * eps_tilde) / a**0.5 + (1 - ap) ** 0.5 * eps_tilde
        if rep < k - 1:
            z = r.renoise(z_prev, i)
    return z_prev


# preset name -> (reference step, its hyper-parameters read from the preset in the reference's units, knob overrides)
CASES = {
    "dps": (dps_step, lambda s: dict(zeta=s["forward_strength"]), {}),
    "freedom": (freedom_step, lambda s: dict(rho=s["forward_strength"]), {}),
    "lgd": (lgd_step, lambda s: dict(strength=s["forward_strength"], probes=s["smoothing_probes"]), {}),
    "mpgd": (mpgd_step, lambda s: dict(c=s["backward_lr"]), {}),
    "dsg": (dsg_step, lambda s: dict(rate=s["forward_strength"]), {}),
    "tfg": (
        tfg_step,
        lambda s: dict(rho=s["forward_strength"], mu=s["backward_lr"], gamma=s["smoothing_std"], probes=s["smoothing_probes"],
                       n_iter=s["backward_steps"], n_recur=s.get("recurrence", 1)),
        {},
    ),
    "ugd": (ugd_step, lambda s: dict(strength=s["forward_strength"], lr=s["backward_lr"], m=s["backward_steps"], k=s["recurrence"]), {}),
    # universal guidance with three Adam steps a chain step and a backward step that shows (lr 0.05)
    "ugd+": (ugd_step, lambda s: dict(strength=s["forward_strength"], lr=s["backward_lr"], m=s["backward_steps"], k=s["recurrence"]),
             dict(backward_steps=3, backward_lr=0.05)),
    # TFG with visible smoothing, two x0 iterations and two recurrences (N_iter, N_recur of Alg. 1)
    "tfg+": (
        tfg_step,
        lambda s: dict(rho=s["forward_strength"], mu=s["backward_lr"], gamma=s["smoothing_std"], probes=s["smoothing_probes"],
                       n_iter=s["backward_steps"], n_recur=s["recurrence"]),
        dict(smoothing_std=0.3, backward_steps=2, recurrence=2, forward_strength=0.5),
    ),
}


def settings(name: str) -> dict:
    return {**PRESETS[name.rstrip("+")][1], **CASES[name][2]}


def start(seed: int = 0) -> torch.Tensor:
    return MU + S * torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_one_step_equals_reference(name):
    step, hyper, _ = CASES[name]
    s = settings(name)
    backbone = gaussian_backbone(MU, S, SHAPE, scheduler())
    run = UniversalGuidance(backbone, as_guide_set(quadratic()), SamplerConfig(**s), make_generators([SEED + i for i in range(N)]))
    chain = NoiseSchedule.from_scheduler(backbone.scheduler, STEPS)
    i, r = 4, Reference()
    assert chain.timesteps == r.ts and chain.alpha_bar_prev == pytest.approx(r.a_prev, abs=1e-12)
    z = (r.a[i] ** 0.5) * start() + (1 - r.a[i]) ** 0.5 * torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.full((N,), r.ts[i], dtype=torch.long)
    k = run.step_knobs(chain)[i]
    if k.recurrence > 1:  # the recurrence lives in sample(); run it here the same way
        from ugd_core.sampler import self_recurrence

        zz = z
        for n in range(k.recurrence):
            ours, _ = run.step(zz, t, r.a[i], r.a_prev[i], None, k)
            if n < k.recurrence - 1:
                zz = self_recurrence(ours, r.a[i], r.a_prev[i], randn(SHAPE, run.gens, z.device, z.dtype))
    else:
        ours, _ = run.step(z, t, r.a[i], r.a_prev[i], None, k)
    ref = step(r, z, i, **hyper(s))
    assert r.max_x0 < 1.0
    off = {key: 0.0 if key in ("zeta", "rho", "mu", "strength", "c", "rate", "lr") else v for key, v in hyper(s).items()}
    assert (ref - step(Reference(), z, i, **off)).abs().max().item() > 1e-2  # the guidance is visible: the check is not vacuous
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", list(CASES))
def test_ten_step_chain_equals_reference(name):
    step, hyper, _ = CASES[name]
    s = settings(name)
    z0 = torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = sample(gaussian_backbone(MU, S, SHAPE, scheduler()), quadratic(), SamplerConfig(num_steps=STEPS, **s), num_images=N, seed=SEED, latents=z0).latents
    r, z = Reference(), z0
    for i in range(STEPS):
        z = step(r, z, i, **hyper(s))
    assert r.max_x0 < 1.0
    assert (ours - z).abs().max().item() < 1e-5
