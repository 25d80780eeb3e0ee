"""The prompt of a class-conditional model: its class index, one for every image or one per image.

Pure and torch-free, so a run's spec is checked before any model loads (``cli.spec.validate_spec``) by the same
rule the backbone applies when it conditions the run (``ugd_core.backbones.class_labels``).
"""

from __future__ import annotations

import operator
import re
from typing import Any, Iterable

from .errors import UgdError


def is_count(value: Any) -> bool:
    """A whole number >= 0, such as a model's class count (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def class_indices(owner: str, prompt: Any, negative_prompt: Any, num_classes: int, batch_sizes: Iterable[int]) -> list[int]:
    """The class indices a prompt names, given as integers or as their text (``--prompt 207``): one (every image) or
    one per image of every batch of ``batch_sizes``. Anything else is one UgdError line naming ``owner`` and the fix."""
    span = f"0..{num_classes - 1}"
    if negative_prompt not in (None, ""):
        raise UgdError(f"{owner}: a class-conditional model takes no negative prompt; drop it")
    if prompt is None or prompt == "":
        raise UgdError(f"{owner} is class-conditional; give the class index {span} as the prompt (e.g. --prompt 3)")
    items = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt]
    try:
        labels = [_index(p) for p in items]
    except (TypeError, ValueError):
        raise UgdError(f"{owner}: prompt {prompt!r} is not a class index; give an integer {span}") from None
    if any(not 0 <= c < num_classes for c in labels):
        raise UgdError(f"{owner}: class {labels} out of range; give an integer {span}")
    wrong = sorted({b for b in batch_sizes if len(labels) not in (1, b)})
    if wrong:
        raise UgdError(f"{owner}: {len(labels)} class labels for {wrong[0]} images; give one or one per image")
    return labels


def _index(item: Any) -> int:
    """One class index: a text of decimal digits (``"207"``, spaces around allowed), or an integer of any kind (int,
    numpy or a one-element integer tensor: ``operator.index``). A float, a bool or other text is refused, never cut."""
    if isinstance(item, str):
        if not re.fullmatch(r"[0-9]+", item.strip()):
            raise ValueError(item)
        return int(item.strip())
    if isinstance(item, bool) or type(item).__name__ == "bool_":
        raise TypeError(item)
    return operator.index(item)
