"""ugd: universal guidance for frozen diffusion models (Bansal et al. 2023).

The SDK: guidance-function protocol, backbone adapters, the sampler, presets and
the plugin registry. It imports no plugin by name.
"""

from .backbones import Backbone, BackboneBase, CallableBackbone, DiffusersPixelBackbone, to_epsilon
from .config import SamplerConfig, load_preset_file, save_preset_file
from .errors import UgdError
from .guidance import Guide, GuidanceFunction, GuideSet, WeightedGuide, freeze, guide_loss, make_guide
from .hookspecs import hookimpl
from .params import Param, parse_spec
from .registry import Registry, get_registry, load_registry
from .sampler import NoiseSchedule, SampleResult, StepKnobs, ddim_step, predict_x0, sample, self_recurrence

__version__ = "0.1.0"

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
