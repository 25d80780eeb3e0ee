"""ugd-adm: OpenAI's guided-diffusion checkpoints (ADM, Dhariwal & Nichol 2021) as a ugd backbone,
and classifier guidance with the release's noise-aware classifiers as a guide."""

from .backbone import AdmBackbone, adm_scheduler, load_adm
from .classifier import classifier_guide, load_classifier, make_classifier_guide
from .configs import RELEASES, Release

__all__ = ["AdmBackbone", "RELEASES", "Release", "adm_scheduler", "classifier_guide", "load_adm", "load_classifier",
           "make_classifier_guide"]
