"""ugd-adm: OpenAI's guided-diffusion checkpoints (ADM, Dhariwal & Nichol 2021) as a ugd backbone,
and classifier guidance with the release's noise-aware classifiers as a guide."""

from typing import TYPE_CHECKING

from ugd_core.lazy import lazy_exports

if TYPE_CHECKING:
    from .backbone import AdmBackbone, adm_scheduler, load_adm
    from .classifier import classifier_guide, load_classifier, make_classifier_guide
    from .configs import RELEASES, Release

# each name loads its module on first use, so discovering the plugin does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["AdmBackbone", "adm_scheduler", "load_adm"], "backbone"),
    **dict.fromkeys(["classifier_guide", "load_classifier", "make_classifier_guide"], "classifier"),
    **dict.fromkeys(["RELEASES", "Release"], "configs"),
})

__all__ = ["AdmBackbone", "RELEASES", "Release", "adm_scheduler", "classifier_guide", "load_adm", "load_classifier",
           "make_classifier_guide"]
