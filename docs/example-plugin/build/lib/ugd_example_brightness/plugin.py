"""Registers the ``brightness`` guide through ugd's hooks."""

from ugd_core import Param, hookimpl, make_guide


def brightness_guide(level: float = 0.5, device: str = "cpu"):
    """Loss = (mean pixel value - level)^2 per image; images are in [-1, 1]."""
    return make_guide(
        "brightness",
        f=lambda x: x.mean(dim=(1, 2, 3)),
        loss=lambda mean, target: (mean - target) ** 2,
        target=level,
    )


@hookimpl
def ugd_register_guides(register):
    register(
        "brightness",
        brightness_guide,
        description="Mean brightness of the image (model-free example guide)",
        params=[Param("level", "float", 0.5, "target mean pixel value in [-1, 1]")],
    )
