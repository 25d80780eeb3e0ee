"""ugd: universal guidance for frozen diffusion models (Bansal et al. 2023).

The SDK: guidance-function protocol, backbone adapters, the sampler, presets and
the plugin registry. It imports no plugin by name.

Importing ``ugd_core`` does not import torch: the registry, ``Param`` and ``hookimpl``
are light, and every other name loads its module on first use (PEP 562), so plugin
discovery, ``ugd list`` and ``ugd info`` stay fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable

# OpenMP threads that sleep at a barrier instead of spinning: with more busy threads than cores (a shared
# machine), spinning GNU OpenMP threads made a digits run 11x slower at 2 threads (docs/benchmarks.md, "Speed");
# the results are bit-identical. Read when torch loads libgomp, so only if torch is not imported yet;
# OMP_WAIT_POLICY=ACTIVE in the environment keeps the spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import UgdError
from .hookspecs import hookimpl
from .lazy import lazy_exports
from .params import Param, parse_spec
from .registry import Registry, get_registry, load_registry

if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from .backbones import Backbone, BackboneBase, CallableBackbone, DiffusersPixelBackbone, to_epsilon
    from .config import SamplerConfig, load_preset_file, save_preset_file
    from .guidance import Guide, GuidanceFunction, GuideSet, WeightedGuide, freeze, guide_loss
    from .sampler import NoiseSchedule, SampleResult, StepKnobs, ddim_step, predict_x0, sample, self_recurrence

__version__ = "0.1.0"

# name -> the submodule that defines it (imported on first access: these import torch)
_LAZY: dict[str, str] = {
    **dict.fromkeys(["Backbone", "BackboneBase", "CallableBackbone", "DiffusersPixelBackbone", "to_epsilon"], "backbones"),
    **dict.fromkeys(["SamplerConfig", "load_preset_file", "save_preset_file"], "config"),
    **dict.fromkeys(["Guide", "GuidanceFunction", "GuideSet", "WeightedGuide", "freeze", "guide_loss"], "guidance"),
    **dict.fromkeys(["NoiseSchedule", "SampleResult", "StepKnobs", "ddim_step", "predict_x0", "sample", "self_recurrence"], "sampler"),
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


def make_guide(name: str, f: Callable[..., Any], loss: Callable[[Any, Any], Any], target: Any = None,
               preprocess: Callable[..., Any] | None = None, differentiable: bool = True, modules: Iterable[Any] = (),
               timestep_aware: bool = False) -> Guide:
    """Build a guide from plain callables: :func:`ugd_core.guidance.make_guide`, which this calls. Defined here,
    without torch, so that a plugin may import it at its top as every example does: the guidance module (and
    torch) loads on the first call, inside the plugin's factory, and ``ugd list`` stays fast."""
    from .guidance import make_guide as build

    return build(name, f, loss, target, preprocess, differentiable, modules, timestep_aware)


__all__ = [
    "Backbone",
    "BackboneBase",
    "CallableBackbone",
    "DiffusersPixelBackbone",
    "Guide",
    "GuideSet",
    "GuidanceFunction",
    "NoiseSchedule",
    "Param",
    "Registry",
    "SampleResult",
    "SamplerConfig",
    "StepKnobs",
    "UgdError",
    "WeightedGuide",
    "ddim_step",
    "freeze",
    "get_registry",
    "guide_loss",
    "hookimpl",
    "load_preset_file",
    "load_registry",
    "make_guide",
    "parse_spec",
    "predict_x0",
    "sample",
    "save_preset_file",
    "self_recurrence",
    "to_epsilon",
]
