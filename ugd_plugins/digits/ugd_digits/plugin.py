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
    )


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    from .guides import REGISTRATIONS

    for entry in REGISTRATIONS:
        register(**entry)
