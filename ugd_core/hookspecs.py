"""The hooks a ugd plugin implements.

A plugin is an ordinary module exposed through the ``ugd`` entry-point group::

    [project.entry-points.ugd]
    my_plugin = "my_package.plugin"

and decorates functions with :data:`hookimpl`. Each hook receives a ``register``
callable; calling it adds one named item. Nothing heavy happens at registration:
factories are called only when the item is built. ugd's own presets and
adapters are registered through these same hooks.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ugd")
hookimpl = pluggy.HookimplMarker("ugd")


@hookspec
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    """Add guides: ``register(name, factory, description=..., params=[Param, ...], differentiable=True)``.

    ``factory(**params)`` returns a :class:`ugd_core.GuidanceFunction`.
    """


@hookspec
def ugd_register_backbones(register):  # type: ignore[no-untyped-def]
    """Add backbones: ``register(name, factory, description=..., params=[Param, ...], default_preset="")``.

    ``factory(device=..., **params)`` returns a :class:`ugd_core.Backbone`.
    """


@hookspec
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    """Add sampler presets: ``register(name, settings_dict, description=..., source=...)``."""


@hookspec
def ugd_register_benchmarks(register):  # type: ignore[no-untyped-def]
    """Add benchmark suites run by ``ugd bench``: ``register(name, factory, description=..., params=[...])``.

    ``factory(**params)`` returns a callable ``run(out_dir, progress) -> dict``.
    """
