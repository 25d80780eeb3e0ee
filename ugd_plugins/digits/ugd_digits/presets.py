"""The digits world's presets and the bench's ablations, each derived from a base (base + changes).

``digits`` is the fast preset (forward + backward), ``digits-full`` adds self-recurrence and is the
backbone's default. The forward strength is scaled by a_t rescaled to mean 1 over the chain
(``abar_normalized``): the z_t gradient of a loss on x0_hat carries 1/sqrt(a_t), and on this cosine
-schedule backbone a_t reaches 2e-6 at the first of 500 steps, so the sqrt(1 - a_t) schedule throws
z_t far off the data in the first steps (docs/benchmarks.md, "Steps"). Strength 5 was chosen on pilot
seeds 500+ by the guide's own loss, never by an evaluator.
"""

from __future__ import annotations

from typing import Any

DIGITS: dict[str, Any] = dict(
    forward_strength=5.0, forward_schedule="abar_normalized", backward_steps=3, backward_lr=0.2, backward_optimizer="sgd"
)
DIGITS_FULL: dict[str, Any] = dict(DIGITS, recurrence=3)
DIGITS_STRONG: dict[str, Any] = dict(DIGITS_FULL, recurrence=5)

PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "digits": (
        "Digits world, fast: forward (strength 5, a_t schedule) + backward m=3 SGD 0.2, no recurrence",
        DIGITS,
        "pilot on seeds outside the benchmark's, by the guide's own loss (docs/benchmarks.md); forward/backward per Bansal et al. 2023",
    ),
    "digits-full": (
        "Digits world, the default before auto: the 'digits' preset + recurrence k=3 (3x its cost)",
        DIGITS_FULL,
        "'digits' + Bansal et al. 2023 self-recurrence (docs/benchmarks.md)",
    ),
    "digits-strong": (
        "Digits world: 'digits-full' with recurrence k=5 (5/3 its cost), for guides that need more steering",
        DIGITS_STRONG,
        "'digits-full' + k=5, picked on pilot seeds 500-501 by a development NN judge on train digits, with the "
        "first digit-robust guide (noise std up to 0.6) (benchmarks/digits_label_pilot.py; docs/benchmarks.md, label goal)",
    ),
}

# Bench ablations of the default preset: what each part of universal guidance adds.
ABLATIONS: dict[str, dict[str, Any]] = {
    "naive": dict(DIGITS, backward_steps=0, forward_input="zt"),  # the clean guide's gradient on the noisy z_t
    "forward": dict(DIGITS, backward_steps=0),
    "forward+backward": DIGITS,
    "forward+backward+recurrence": DIGITS_FULL,
}
