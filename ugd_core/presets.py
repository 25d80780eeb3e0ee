"""The method presets: named knob sets of the one sampler (``SamplerConfig``).

Each entry is (description, settings, source). The values are taken from each
method's paper and public code, cited per preset. Guidance strengths are in
units of the guide's loss, so a guide's ``weight`` scales them.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ugd": (
        "Universal guidance: forward (s(t) scaled by sqrt(1-a_t)) + backward (m=3) + self-recurrence (k=3)",
        dict(forward_strength=1.0, forward_schedule="sqrt_1m_abar", backward_steps=3, backward_lr=0.1, recurrence=3),
        "Bansal et al. 2023, Algorithm 1 (forward, backward, recurrence all on)",
    ),
    "forward-only": (
        "Forward universal guidance only: gradient through the denoiser of the guide's loss on x0_hat",
        dict(forward_strength=1.0, forward_schedule="sqrt_1m_abar"),
        "Bansal et al. 2023, Sec. 3.1",
    ),
    "naive": (
        "Classifier-guidance style baseline: the clean guide's gradient taken on the noisy z_t (expected to fail)",
        dict(forward_strength=1.0, forward_schedule="sqrt_1m_abar", forward_input="zt"),
        "Dhariwal & Nichol 2021 classifier guidance, applied to an off-the-shelf clean-image guide",
    ),
    "dps": (
        "DPS: z_t-gradient of the loss on x0_hat, one pass, step divided by the residual norm, ancestral sampling",
        dict(forward_strength=1.0, forward_schedule="constant", forward_normalize="loss", eta=1.0),
        "Chung et al. 2023, Algorithm 1 (zeta_i = zeta' / ||y - A(x0_hat)||)",
    ),
    "lgd": (
        "LGD: DPS-style z_t gradient of the loss averaged over samples drawn around x0_hat (std grows with noise)",
        dict(forward_strength=1.0, forward_schedule="sqrt_1m_abar", smoothing_std=0.1, smoothing_schedule="decrease", smoothing_probes=4),
        "Song et al. 2023 (Loss-Guided Diffusion, Monte-Carlo x0 samples); knob names after TFG (Ye et al. 2024)",
    ),
    "freedom": (
        "FreeDoM: z_t gradient scaled to the gradient norm, time-travel (recurrence) in the early chain, no guidance at the end",
        dict(
            forward_strength=0.2,
            forward_schedule="constant",
            forward_normalize="grad",
            forward_window=(0.0, 0.8),
            recurrence=3,
            recurrence_window=(0.1, 0.5),
        ),
        "Yu et al. 2023 (rho_t tied to the gradient norm; time-travel r steps in the semantic stage)",
    ),
    "mpgd": (
        "MPGD: gradient step(s) on x0_hat only, never through the denoiser (backward guidance without forward)",
        dict(backward_steps=1, backward_lr=0.5),
        "He et al. 2023 (Manifold Preserving Guided Diffusion, x0-space update)",
    ),
    "tfg": (
        "TFG: rho on z_t and mu on x0 ('increase' schedules), gamma smoothing ('decrease'), beam-search starting point",
        dict(
            forward_strength=0.25,
            forward_schedule="increase",
            backward_steps=1,
            backward_lr=0.25,
            backward_schedule="increase",
            smoothing_std=0.001,
            smoothing_schedule="decrease",
            smoothing_probes=1,
        ),
        "Ye et al. 2024 (TFG), beam-search start rho=0.25, mu=0.25, gamma=0.001; code YWolfeee/Training-Free-Guidance",
    ),
}
