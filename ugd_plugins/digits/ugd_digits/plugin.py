"""Registers the digits world with ugd: the default backbone, its guides and the benchmark.

Nothing here imports torch (``ugd list`` must not): the factories are :func:`registrations.lazy` references
and the benchmark's parameters a function, each importing its module when the item is first used.
"""

from __future__ import annotations

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param

from .registrations import GUIDES, NOISY_GUIDE, NOISY_PRESET, lazy


@hookimpl
def ugd_register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "digits",
        lazy("backbone", "load_backbone"),
        description="32x32 DDPM of real MNIST digits at random scale and position (ships with the plugin, offline, CPU)",
        params=[Param("weights", "path", "", "safetensors file (default: the shipped weights)")],
        default_preset="auto",
        default_steps=20,  # DDIM-20 holds the 50-step quality on this cosine-schedule model (docs/benchmarks.md)
        reads=(),  # unconditional
        example="--guide digit-robust:label=7",  # also the example of presets that name no backbone
    )
    register(
        "digits-flow",
        lazy("backbone_flow", "load_flow_backbone"),
        description="32x32 rectified flow (flow-matching loss, v = eps - x0) of the same digits and network as 'digits', "
        "sampled through the flow adapter (ships with the plugin, offline, CPU)",
        params=[Param("weights", "path", "", "safetensors file (default: the shipped weights)")],
        default_preset="auto",
        default_steps=20,  # as the DDPM (the default preset is unmeasured on this backbone: docs/backbones/digits-flow.md)
        reads=(),  # unconditional
        example="--guide digit-robust:label=7",
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    from .presets import PRESETS

    for name, (description, settings, source) in PRESETS.items():
        register(name, dict(settings), description=description, source=source)
    # classifier guidance with the noise-aware digit-noisy guide
    register("digits-classifier-guidance", NOISY_PRESET[1], description=NOISY_PRESET[0], source=NOISY_PRESET[2])


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    for entry in [*GUIDES, NOISY_GUIDE]:
        register(**entry)


@hookimpl
def ugd_register_benchmarks(register):  # type: ignore[no-untyped-def]
    register(
        "digits",
        lazy("bench", "make_suite"),
        description="Digits world: tasks x methods, judged by independent evaluators (metric, FID, cost)",
        params=_bench_params,
    )


def _bench_params() -> list[Param]:
    """The suite's parameters, read when first needed (``ugd bench``, ``ugd info``): ``.bench`` imports torch."""
    from .bench import DEFAULT_LABEL_GUIDE, DEFAULT_METHODS, LABEL_GUIDES, OBJECTIVES, REPORTED_SEEDS, TASKS

    return [
        Param("samples", "int", 4, "samples per target per seed"),
        Param("cases", "int", 4, "targets (digits of the held-out target set) per task per seed; label always uses all 10 classes"),
        Param("seeds", "str", ",".join(map(str, REPORTED_SEEDS)), "comma-separated seeds (reported seeds 1000-1999; "
              "pilot 500-999 and tuning 300-399: docs/benchmarks.md, seeds)"),
        Param("steps", "str", "50", "DDIM steps; a comma-separated list (10,20,50,100,250,500) runs a step sweep"),
        Param("tasks", "str", ",".join(TASKS), "comma-separated tasks"),
        Param("methods", "str", ",".join(DEFAULT_METHODS), "comma-separated methods: the bench's ablations, registered preset names or preset JSON files (`ugd tune`)"),
        Param("quick", "bool", False, "smoke run: 2 samples, 2 targets, 1 pilot seed (500), 10 steps, label+mask, 4 methods"),
        Param("device", "str", "cpu", "cpu or cuda"),
        Param("label_guide", "str", DEFAULT_LABEL_GUIDE, "guide of the class term (label task; box's and inpaint's class)",
              choices=LABEL_GUIDES),
        Param("label_weights", "path", "", "weights file of the label guide's network (a retrained variant; "
              "default: the shipped weights)"),
        Param("objective", "str", "development", "what `ugd tune` optimises: development (the development NN judge "
              "on train digits for label, the guide loss otherwise), guide-loss, or evaluator (held-out; reports only)",
              choices=OBJECTIVES),
        Param("guide_weights", "str", "", "a weight for a named guide in every case, GUIDE=W;GUIDE=W (e.g. digit-box=4; "
              "default: the bench's own, or 1 for methods that normalise each guide)"),
    ]
