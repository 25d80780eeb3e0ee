"""The ``classifier`` guide: Dhariwal & Nichol's classifier guidance with the release's noise-aware classifier.

The released ``*_classifier.pt`` files are guided-diffusion ``EncoderUNetModel``s
(the UNet's encoder half with an attention-pool head) trained on noisy x_t at
uniformly drawn t. The guide is timestep-aware: the sampler calls ``f(z_t, t)``
with the training timesteps, and the loss is -log p(y | z_t, t). Under the
``classifier-guidance`` preset (``forward_input="zt"``, ``forward_schedule=
"sqrt_1m_abar"``) the sampler's forward guidance becomes
eps_hat = eps - s sqrt(1 - a_t) grad_{z_t} log p(y | z_t, t), Dhariwal & Nichol 2021 eq. 14 / Alg. 2,
with s the README's ``--classifier_scale``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ugd_core.errors import UgdError

from .checkpoints import load_into, resolve_checkpoint
from .configs import NUM_CLASSES, RELEASES, Resolved, classifier_kwargs, import_script_util

DEFAULT_CLASSIFIER = RELEASES["256-classifier"].files[0]


def build_classifier(resolved: Resolved) -> tuple[nn.Module, int]:
    """A random-weight classifier of a resolved config, and the image size it takes."""
    su = import_script_util()
    k = classifier_kwargs(resolved.flags)
    size = int(k["image_size"])
    try:
        if k["classifier_channel_mult"] == "" and k["classifier_num_head_channels"] == 64:  # the releases
            net = su.create_classifier(
                size, False, k["classifier_width"], k["classifier_depth"], k["classifier_attention_resolutions"],
                k["classifier_use_scale_shift_norm"], k["classifier_resblock_updown"], k["classifier_pool"],
            )
        else:  # a custom config: the same class with the channel multipliers / head width stated
            from guided_diffusion.unet import EncoderUNetModel

            net = EncoderUNetModel(
                image_size=size, in_channels=3, model_channels=k["classifier_width"], out_channels=NUM_CLASSES,
                num_res_blocks=k["classifier_depth"],
                attention_resolutions=tuple(size // int(r) for r in str(k["classifier_attention_resolutions"]).split(",")),
                channel_mult=tuple(float(c) if "." in c else int(c) for c in str(k["classifier_channel_mult"]).split(",")),
                num_head_channels=k["classifier_num_head_channels"], use_scale_shift_norm=k["classifier_use_scale_shift_norm"],
                resblock_updown=k["classifier_resblock_updown"], pool=k["classifier_pool"],
            )
    except (ValueError, AssertionError, NotImplementedError) as exc:
        raise UgdError(f"adm: classifier config {resolved.name!r} does not build ({type(exc).__name__}: {exc})") from None
    return net, size


def load_classifier(model: str = DEFAULT_CLASSIFIER, config: str = "", device: str = "cpu") -> tuple[nn.Module, int]:
    """The release's classifier with its checkpoint loaded, frozen, on ``device``."""
    resolved, path = resolve_checkpoint(config, model, "classifier")
    net, size = build_classifier(resolved)
    load_into(net, path, resolved)
    net.eval().requires_grad_(False)
    return net.to(device), size


def classifier_guide(label: int, model: str = DEFAULT_CLASSIFIER, config: str = "", device: str = "cpu") -> Any:
    """Classifier guidance toward ImageNet class ``label``: loss -log p(label | z_t, t), timestep-aware."""
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < NUM_CLASSES:
        raise UgdError(f"classifier: label={label!r} is not an ImageNet class; use an integer 0..{NUM_CLASSES - 1}")
    net, size = load_classifier(model, config, device)
    return make_classifier_guide(net, size, label, device)


def make_classifier_guide(net: nn.Module, size: int, label: int, device: str | torch.device = "cpu") -> Any:
    """Wrap a noise-aware classifier ``net(x, t) -> logits`` taking ``size``x``size`` images as a timestep-aware guide."""
    from ugd_core.guidance import make_guide

    def preprocess(images: Tensor) -> Tensor:
        if images.shape[-2:] != (size, size):  # the classifier's attention pool is fixed to its release's size
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images

    def f(x: Tensor, t: Tensor) -> Tensor:
        return net(x, t.to(x.device)).float()

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target.to(logits.device).expand(logits.shape[0]), reduction="none")

    target = torch.tensor([label], device=device)
    return make_guide("classifier", f, loss, target, preprocess, modules=(net,), timestep_aware=True)
