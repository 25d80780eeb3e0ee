"""The hooks a ugd plugin implements.

A plugin is an ordinary module exposed through the ``ugd`` entry-point group::

    [project.entry-points.ugd]
    my_plugin = "my_package.plugin"

and decorates functions with :data:`hookimpl`. Each hook receives a ``register``
callable; calling it adds one named item. Nothing heavy happens at registration:
factories are called only when the item is built, with parameter values already
converted to their ``Param`` types; import torch and other heavy modules inside the factories,
never at a plugin module's top level (``ugd list`` must not import them). A factory reports a bad parameter by raising
:class:`ugd_core.UgdError` (one line: the problem and the fix); a ``ValueError``,
``TypeError`` or ``KeyError`` it raises is shown as one line naming the plugin.
A name another plugin already registered is kept by both; the bare name is then
refused and ``PLUGIN:NAME`` picks one. ugd's own presets and adapters are
registered through these same hooks.
"""

from __future__ import annotations

from typing import Any, Callable

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
    """Add backbones: ``register(name, factory, description=..., params=[Param, ...], default_preset="", default_steps=0)``.

    ``factory(device=..., **params)`` returns a :class:`ugd_core.Backbone`. ``default_preset`` (default: ``auto``) is
    used when guides are given without a preset; ``default_steps`` (default: the sampler's 50) when neither the preset
    nor the user sets a step count.
    """


@hookspec
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    """Add sampler presets: ``register(name, settings_dict, description=..., source=..., example=...)``.

    ``example``: the other arguments of a ``ugd generate --preset NAME ...`` that runs the preset, e.g.
    ``'--backbone stable-diffusion --prompt "a portrait" --guide face:image=face.jpg'`` (default: the
    default backbone's example). Backbones and guides take ``example=`` too (backbones: what to add to
    ``--backbone NAME``; guides: the whole arguments instead of ``--guide NAME:<required params>``).
    """


@hookspec
def ugd_register_benchmarks(register):  # type: ignore[no-untyped-def]
    """Add benchmark suites run by ``ugd bench``: ``register(name, factory, description=..., params=[...])``.

    ``factory(**params)`` returns a callable ``run(out_dir, progress) -> dict``. ``params`` may also be a
    function returning the list, called only when the parameters are first needed (so a suite whose
    defaults live in a torch-importing module keeps ``ugd list`` fast).
    """


def register_preset_table(
    register: Callable[..., None], table: dict[str, tuple[str, dict[str, Any], str]], examples: str | dict[str, str] = ""
) -> None:
    """Register ``{name: (description, settings, source)}`` from a ``ugd_register_presets`` hook.

    ``examples``: the other arguments of a ``ugd generate --preset NAME ...`` that runs each preset
    (backbone, prompt, guides), one text for the whole table or one per name; ``ugd info`` shows it.
    """
    for name, (description, settings, source) in table.items():
        example = examples if isinstance(examples, str) else examples.get(name, "")
        register(name, settings, description=description, source=source, example=example)
