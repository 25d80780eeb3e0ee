"""Plugin discovery and the registry of guides, backbones, presets and benchmarks.

One pluggy ``PluginManager`` per registry. ugd's built-in module registers
through the same hooks as third parties; every installed distribution's
``ugd`` entry points are loaded one by one, so a plugin that fails to import or
whose hook raises is recorded as *broken* with its error instead of taking the
registry (or the CLI) down. ``UGD_LOAD_PLUGINS`` (comma-separated entry-point
names; empty for none) restricts which third-party plugins load.

Names are never silently replaced: when two plugins register the same name
(a built-in included), using the bare name is a UgdError naming both plugins,
and ``PLUGIN:NAME`` picks one. Every entry keeps the plugin that supplied it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .class_prompt import is_count
from .errors import UgdError
from .hookspecs import register_preset_table
from .params import Param, checked_param, closest, parse_spec, resolve_params

__all__ = ["Entry", "KINDS", "PluginInfo", "Registry", "get_registry", "load_registry", "register_preset_table", "reset_registry"]

ENTRY_POINT_GROUP = "ugd"
KINDS = ("guide", "backbone", "preset", "benchmark")


# the texts a run may hand its backbone; a backbone that declares which it reads has the others refused before any work
TEXT_INPUTS = ("prompt", "negative_prompt")


@dataclass
class Entry:
    """One registered item."""

    kind: str
    name: str
    factory: Callable[..., Any] | None
    description: str
    declared_params: list[Param] | Callable[[], Iterable[Param]] = field(default_factory=list)
    differentiable: bool = True
    plugin: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # presets: the knob values
    source: str = ""  # presets: where the values come from
    default_preset: str = ""  # backbones: the preset used when guides are given without --preset
    default_steps: int = 0  # backbones: the step count when neither the preset nor --steps sets one (0 = SamplerConfig's)
    example: str = ""  # the arguments of `ugd generate` (benchmarks: `ugd bench NAME`) that run it, shown by `ugd info`
    # backbones: the texts it reads (prompt, negative_prompt); or a function of its parameters that says so without loading
    # any weights (a model family whose members differ: class-conditional or not); None = it checks them itself
    reads: tuple[str, ...] | Callable[..., Iterable[str] | None] | None = None
    # backbones: a class-conditional model whose prompt is its class index: the number of classes, or a function of its
    # parameters that says so without loading weights (0: not class-conditional; None: unknown until it loads). It reads
    # the prompt (and nothing else) where there are classes, and the prompt is checked as a class index before any work
    classes: int | Callable[..., int | None] | None = None

    @property
    def params(self) -> list[Param]:
        """The parameters. A plugin may declare them as a function (when their defaults live in a module that
        imports torch): it is called here, on first use, so listing plugins never runs it."""
        if callable(self.declared_params):
            owner = f"plugin {self.plugin!r}, {self.kind} {self.name!r}"
            self.declared_params = [checked_param(p, owner) for p in self.declared_params()]
        return self.declared_params

    def reading(self, params: dict[str, Any]) -> tuple[tuple[str, ...] | None, int | None]:
        """What this backbone reads with these (resolved) parameters, from one call of its declaration: the texts
        (``reads`` itself or what its function returns; a class-conditional backbone's, from ``classes``: the prompt
        where it has classes; None when the backbone checks them itself) and the number of classes (0: not
        class-conditional; None: unknown until it loads). A function returning anything else is one line."""
        if self.classes is None:
            return self._texts_read(params), 0
        count = self.classes(**params) if callable(self.classes) else self.classes
        if count is not None and not is_count(count):
            raise UgdError(f"plugin {self.plugin!r}, backbone {self.name!r}: its classes function returned {count!r}; it must "
                           "return a whole number >= 0 or None")
        return (None if count is None else ("prompt",) if count else ()), count

    def _texts_read(self, params: dict[str, Any]) -> tuple[str, ...] | None:
        if not callable(self.reads):
            return self.reads
        found = self.reads(**params)
        if found is None:
            return None
        texts = tuple(found)
        if not set(texts) <= set(TEXT_INPUTS):
            raise UgdError(f"plugin {self.plugin!r}, backbone {self.name!r}: its reads function returned {texts!r}; it may name "
                           f"only {', '.join(TEXT_INPUTS)}")
        return texts


@dataclass
class PluginInfo:
    """A loaded (or broken) plugin."""

    name: str
    version: str
    hooks: list[str]
    error: str = ""


class Registry:
    """Everything registered by the loaded plugins."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.problems: list[str] = []  # name clashes and similar non-fatal issues
        self.clashes: dict[str, dict[str, list[Entry]]] = {k: {} for k in KINDS}  # name -> every entry of that name
        self.by_plugin: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}  # "PLUGIN:NAME" -> entry
        self.pm = pluggy.PluginManager("ugd")
        self.pm.add_hookspecs(hookspecs)

    # -- loading -------------------------------------------------------------------------

    def add_plugin(self, module: ModuleType | object, name: str, version: str = "") -> None:
        """Register one plugin object and run its hooks, recording any failure as broken."""
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # a malformed hookimpl
            self.plugins[name] = PluginInfo(name, version, [], f"{type(exc).__name__}: {exc}")
            return
        hooks = [h.name for h in self.pm.get_hookcallers(module) or []]
        info = PluginInfo(name, version, sorted(hooks))
        self.plugins[name] = info
        for kind in KINDS:
            caller = getattr(self.pm.hook, f"ugd_register_{kind}s")
            for impl in caller.get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    impl.function(register=self._registrar(kind, name))
                except Exception as exc:
                    info.error = f"{kind}s hook raised {type(exc).__name__}: {exc}"

    def load_entry_points(self) -> None:
        """Load every plugin advertised in the ``ugd`` entry-point group."""
        wanted = os.environ.get("UGD_LOAD_PLUGINS")
        allow = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allow is not None and ep.name not in allow:
                continue
            if ep.name in self.plugins:
                self.problems.append(f"plugin name {ep.name!r} is provided twice; kept the first")
                continue
            version = ep.dist.version if ep.dist is not None else ""
            try:
                module = ep.load()
            except Exception as exc:
                self.plugins[ep.name] = PluginInfo(ep.name, version, [], f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(module, ep.name, version)

    def _registrar(self, kind: str, plugin: str) -> Callable[..., None]:
        def register(
            name: str,
            factory: Any = None,
            description: str = "",
            params: Iterable[Param] | Callable[[], Iterable[Param]] = (),
            differentiable: bool = True,
            source: str = "",
            default_preset: str = "",
            example: str = "",
            default_steps: int = 0,
            reads: Iterable[str] | Callable[..., Iterable[str] | None] | None = None,
            classes: int | Callable[..., int | None] | None = None,
        ) -> None:
            owner = f"plugin {plugin!r}, {kind} {name!r}"
            if not isinstance(name, str) or not name or any(c in name for c in "=,\"' :"):
                self._reject(plugin, f"{kind} name {name!r} must be a non-empty string without spaces, ':', '=', ',' or quotes")
                return
            try:  # parameters declared as a function are checked when first read (Entry.params)
                checked = params if callable(params) else [checked_param(p, owner) for p in params]
            except UgdError as exc:
                self._reject(plugin, str(exc))
                return
            if reads is not None and not callable(reads) and not set(reads) <= set(TEXT_INPUTS):
                self._reject(plugin, f"{kind} {name!r}: reads={tuple(reads)!r} may name only {', '.join(TEXT_INPUTS)}")
                return
            if classes is not None and not callable(classes) and not is_count(classes):
                self._reject(plugin, f"{kind} {name!r}: classes={classes!r} must be a whole number >= 0, a function of its parameters, or None")
                return
            if classes is not None and reads is not None:
                self._reject(plugin, f"{kind} {name!r}: give reads= or classes=, not both (a class-conditional model reads its class index as the prompt)")
                return
            settings = dict(factory) if kind == "preset" else {}
            fn = None if kind == "preset" else factory
            entry = Entry(kind, name, fn, description, checked, differentiable, plugin, settings, source, default_preset,
                          default_steps=default_steps, example=example,
                          reads=reads if reads is None or callable(reads) else tuple(reads), classes=classes)
            self.by_plugin[kind][f"{plugin}:{name}"] = entry
            table = self.entries[kind]
            if name not in table:
                table[name] = entry
                return
            same = self.clashes[kind].setdefault(name, [table[name]])
            same.append(entry)
            self.problems.append(
                f"{kind} {name!r} is registered by plugins {', '.join(repr(e.plugin) for e in same)}; "
                f"the bare name is refused, use {' or '.join(f'{e.plugin}:{name}' for e in same)}"
            )

        return register

    def _reject(self, plugin: str, message: str) -> None:
        """Record a bad registration as the plugin's error (the plugin's other entries stay)."""
        info = self.plugins.get(plugin)
        if info is not None and not info.error:
            info.error = message
        self.problems.append(f"plugin {plugin!r}: {message}")

    # -- lookup --------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> Entry:
        """The entry of that kind and name (``NAME`` or ``PLUGIN:NAME``), or a UgdError that
        suggests the closest names, or names the plugins when two registered ``NAME``."""
        table = self.entries[kind]
        if ":" in name:
            if name in self.by_plugin[kind]:
                return self.by_plugin[kind][name]
            plugin, _, bare = name.partition(":")
            if plugin not in self.plugins:
                raise UgdError(
                    f"malformed spec {name!r}: {bare!r} is not key=value and {plugin!r} is no plugin; "
                    f"write {plugin}:{bare}=VALUE (or PLUGIN:NAME with a plugin from `ugd list`)"
                )
            raise UgdError(
                f"plugin {plugin!r} has no {kind} {bare!r}{closest(bare, list(table))}; "
                f"to pass a parameter write {plugin}:{bare}=VALUE; `ugd list` shows the {kind}s available"
            )
        if name in self.clashes[kind]:
            same = self.clashes[kind][name]
            raise UgdError(
                f"{kind} {name!r} is registered by plugins {' and '.join(repr(e.plugin) for e in same)}; "
                f"name one: {' or '.join(f'{e.plugin}:{name}' for e in same)}"
            )
        if name in table:
            return table[name]
        broken = [p for p in self.plugins.values() if p.error]
        hint = closest(name, list(table))
        extra = f"; broken plugins: {', '.join(p.name for p in broken)} (see `ugd list`)" if broken else ""
        raise UgdError(f"unknown {kind} {name!r}{hint}; `ugd list` shows the {kind}s available{extra}")

    def find(self, name: str) -> Entry:
        """Look a name (or ``PLUGIN:NAME``) up across all kinds (for ``ugd info``)."""
        for kind in KINDS:
            if name in self.entries[kind] or name in self.by_plugin[kind]:
                return self.get(kind, name)
        every = [n for k in KINDS for n in self.entries[k]]
        if ":" in name:
            return self.get("guide", name)  # its message says what is wrong with PLUGIN:NAME
        raise UgdError(f"unknown name {name!r}{closest(name, every)}; `ugd list` shows what is installed")

    def build(self, kind: str, name: str, params: dict[str, Any] | None = None, **extra: Any) -> Any:
        """Resolve parameters and call the factory of a guide, backbone or benchmark.

        A factory's ``ValueError``, ``TypeError`` or ``KeyError`` becomes a UgdError
        naming the plugin; plugins should raise :class:`ugd_core.UgdError` themselves.
        """
        entry = self.get(kind, name)
        resolved = resolve_params(name, entry.params, params or {})
        assert entry.factory is not None
        try:
            return entry.factory(**resolved, **extra)
        except UgdError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UgdError(
                f"{kind} {entry.name!r} (plugin {entry.plugin!r}) rejected its parameters: {type(exc).__name__}: {detail}; "
                f"see `ugd info {entry.plugin}:{entry.name}`"
            ) from None

    def build_from_spec(self, kind: str, spec: str, **extra: Any) -> Any:
        """Build from ``NAME:key=value,...`` text."""
        name, params = parse_spec(spec)
        return self.build(kind, name, params, **extra)


def load_registry(extra_plugins: Iterable[tuple[str, object]] = (), entry_points: bool = True) -> Registry:
    """A fresh registry: ugd's built-ins, installed entry-point plugins, then ``extra_plugins``."""
    from . import builtin

    try:
        version = md.version("ugd")
    except md.PackageNotFoundError:
        version = "0+unknown"
    reg = Registry()
    reg.add_plugin(builtin, "ugd", version)
    if entry_points:
        reg.load_entry_points()
    for name, module in extra_plugins:
        reg.add_plugin(module, name)
    return reg


_DEFAULT: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (loaded on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_registry()
    return _DEFAULT


def reset_registry() -> None:
    """Forget the process-wide registry (after installing a plugin, or in tests)."""
    global _DEFAULT
    _DEFAULT = None
