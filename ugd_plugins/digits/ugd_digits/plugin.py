"""Registers the digits world with ugd: the default backbone, its guides and the benchmark."""

from __future__ import annotations

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param


@hookimpl
def ugd_register_backbones(register):  # type: ignore[no-untyped-def]
    from .backbone import load_backbone

    register(
        "digits",
        load_backbone,
        description="32x32 DDPM of real MNIST digits at random scale and position (ships with the plugin, offline, CPU)",
        params=[Param("weights", "path", "", "safetensors file (default: the shipped weights)")],
        default_preset="digits-full",
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    from .presets import PRESETS

    for name, (description, settings, source) in PRESETS.items():
        register(name, dict(settings), description=description, source=source)
    from .noisy_classifier import PRESET  # classifier guidance with the noise-aware digit-noisy guide

    register("digits-classifier-guidance", PRESET[1], description=PRESET[0], source=PRESET[2])


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    from .guides import REGISTRATIONS
    from .noisy_classifier import REGISTRATION

    for entry in [*REGISTRATIONS, REGISTRATION]:
        register(**entry)


@hookimpl
def ugd_register_benchmarks(register):  # type: ignore[no-untyped-def]
    from .bench import DEFAULT_LABEL_GUIDE, DEFAULT_METHODS, LABEL_GUIDES, TASKS, make_suite

    register(
        "digits",
        make_suite,
        description="Digits world: tasks x methods, judged by independent evaluators (metric, FID, cost)",
        params=[
            Param("samples", "int", 4, "samples per target per seed"),
            Param("cases", "int", 4, "targets (held-out references) per task per seed; label always uses all 10 classes"),
            Param("seeds", "str", "0,1,2", "comma-separated seeds"),
            Param("steps", "str", "50", "DDIM steps; a comma-separated list (10,20,50,100,250,500) runs a step sweep"),
            Param("tasks", "str", ",".join(TASKS), "comma-separated tasks"),
            Param("methods", "str", ",".join(DEFAULT_METHODS), "comma-separated methods: the bench's ablations, registered preset names or preset JSON files (`ugd tune`)"),
            Param("quick", "bool", False, "smoke run: 2 samples, 2 targets, 1 seed, 10 steps, label+mask, 4 methods"),
            Param("device", "str", "cpu", "cpu or cuda"),
            Param("label_guide", "str", DEFAULT_LABEL_GUIDE, "guide of the class term (label task; box's and inpaint's class)",
                  choices=LABEL_GUIDES),
            Param("label_weights", "path", "", "weights file of the label guide's network (a retrained variant; "
                  "default: the shipped weights)"),
        ],
    )
