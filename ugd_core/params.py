"""Typed, documented parameters of guides, backbones and benchmarks, and the ``NAME:key=value`` syntax."""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .errors import UgdError


def _to_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{raw!r} is not a boolean (use true or false)")


def _python_value(raw: Any, kind: str) -> Any:
    """A Python value given for an int, float or bool parameter, as that type, or None where it is not one (a bool is
    not a number here, nor a fraction an int)."""
    if kind == "bool":
        return raw if isinstance(raw, bool) else None
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        return None
    if kind == "int":
        return int(raw) if isinstance(raw, numbers.Integral) else None
    return float(raw)


# parameter types: name -> (the class that also names it, the converter from text)
_TYPES: dict[str, tuple[type, Callable[[str], Any]]] = {
    "str": (str, str),
    "int": (int, int),
    "float": (float, float),
    "bool": (bool, _to_bool),
    "path": (Path, str),
}


@dataclass(frozen=True)
class Param:
    """One parameter: name, type ('str', 'int', 'float', 'bool', 'path'), default, help.

    ``required`` parameters have no default; ``choices`` restricts string values.
    The registry checks the type at registration and also accepts the classes
    ``str``, ``int``, ``float``, ``bool`` and ``pathlib.Path`` (stored as their names).
    Factories receive values already converted to the type.
    """

    name: str
    type: str = "str"
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple[str, ...] | None = None
    example: str = ""  # a value shown in `ugd info`'s example spec (default: one made from the type)

    def coerce(self, raw: Any, owner: str) -> Any:
        """Convert a raw (usually string) value to this parameter's type, or raise UgdError. From Python, a number or
        a bool is checked against the type (an int, a float or a bool; an int is a float), and any other object for a
        str or path parameter (an image tensor, say) is handed over as it is."""
        if raw is None or (not isinstance(raw, str) and self.type in ("str", "path")):
            value = raw
        elif not isinstance(raw, str):
            value = _python_value(raw, self.type)
            if value is None:
                raise UgdError(f"{owner}: parameter {self.name}={raw!r} is not a valid {self.type} "
                               f"({type(raw).__name__} given); see `ugd info {owner}`")
        else:
            try:
                value = _TYPES[self.type][1](raw)
            except (ValueError, KeyError) as exc:
                raise UgdError(
                    f"{owner}: parameter {self.name}={raw!r} is not a valid {self.type} ({exc}); "
                    f"see `ugd info {owner}`"
                ) from None
        if self.choices and value not in self.choices:
            raise UgdError(f"{owner}: {self.name}={value!r} is not one of {', '.join(self.choices)}")
        return value


def checked_param(p: Any, owner: str) -> Param:
    """``p`` as a valid :class:`Param` (a class type such as ``float`` becomes ``"float"``),
    or a UgdError naming ``owner`` and the accepted types."""
    if not isinstance(p, Param):
        raise UgdError(f"{owner}: parameter {p!r} is not a ugd_core.Param; write Param(name, type, default, help)")
    names = {cls: name for name, (cls, _) in _TYPES.items()}
    kind = p.type if isinstance(p.type, str) and p.type in _TYPES else names.get(p.type)
    if kind is None:
        raise UgdError(f"{owner}: parameter {p.name!r} has type {p.type!r}; use one of {', '.join(_TYPES)}")
    return p if kind == p.type else replace(p, type=kind)


def closest(name: str, options: list[str]) -> str:
    """' (did you mean X?)' for the nearest known name, or ''."""
    match = difflib.get_close_matches(name, options, n=2, cutoff=0.5)
    return f" (did you mean {' or '.join(match)}?)" if match else ""


def resolve_params(owner: str, params: list[Param], given: dict[str, Any]) -> dict[str, Any]:
    """Check names against ``params``, coerce types, fill defaults; UgdError on any problem."""
    known = {p.name: p for p in params}
    out: dict[str, Any] = {}
    for key, raw in given.items():
        if key not in known:
            names = sorted(known)
            hint = closest(key, names) or (f"; known: {', '.join(names)}" if names else "; it takes no parameters")
            raise UgdError(f"{owner}: unknown parameter {key!r}{hint}")
        out[key] = known[key].coerce(raw, owner)
    for p in params:
        if p.name not in out:
            if p.required:
                raise UgdError(f"{owner}: missing required parameter {p.name!r} ({p.help}); e.g. {owner}:{p.name}=...")
            out[p.name] = p.default
    return out


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """Parse ``NAME``, ``NAME:key=value,key2="a,b"`` or ``PLUGIN:NAME[:key=value,...]`` into
    (name, {key: raw value}); the name of the last form is ``"PLUGIN:NAME"``.

    Values containing commas are quoted with double or single quotes. Raises
    UgdError for a malformed spec.
    """
    text = text.strip()
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not _is_name(name):
        raise UgdError(f"malformed spec {text!r}: expected NAME or NAME:key=value,key2=value")
    head, sep2, tail = rest.partition(":")
    if sep and _is_name(head.strip()):  # PLUGIN:NAME picks one plugin's item when two share a name
        name, sep, rest = f"{name}:{head.strip()}", sep2, tail
    params: dict[str, str] = {}
    if not sep:
        return name, params
    if not rest.strip():
        raise UgdError(f"malformed spec {text!r}: nothing after ':'; write NAME:key=value or drop the ':'")
    fields = _split_fields(rest, text)
    for i, field in enumerate(fields):
        key, eq, value = field.partition("=")
        key = key.strip()
        if not eq or not key:
            if i > 0 and not eq:
                raise UgdError(f"malformed spec {text!r}: {field.strip()!r} is not key=value; "
                               f"quote a value that holds commas: {_quoted_hint(name, fields, i)}")
            raise UgdError(f"malformed spec {text!r}: {field.strip()!r} is not key=value")
        if key in params:
            raise UgdError(f"malformed spec {text!r}: parameter {key!r} given twice")
        params[key] = _unquote(value.strip())
    return name, params


def _is_name(text: str) -> bool:
    return bool(text) and not any(c in text for c in "=,\"' :")


def _quoted_hint(name: str, fields: list[str], bad: int) -> str:
    """The spec rewritten with the value before field ``bad`` and the bare fields after it quoted."""
    end = bad
    while end < len(fields) and "=" not in fields[end]:
        end += 1
    key, _, first = fields[bad - 1].partition("=")
    value = ",".join([first, *fields[bad:end]])
    parts = [*fields[: bad - 1], f'{key}="{value}"', *fields[end:]]
    return "'" + name + ":" + ",".join(parts) + "'"


def _split_fields(rest: str, text: str) -> list[str]:
    """Split on commas outside single or double quotes."""
    fields, buf, quote = [], [], ""
    for ch in rest:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            buf.append(ch)
        elif ch == ",":
            fields.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise UgdError(f"malformed spec {text!r}: unclosed {quote} quote")
    fields.append("".join(buf))
    return fields


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
