"""Registers the ``brightness`` guide through ugd's hooks."""

from ugd_core import Param, UgdError, hookimpl, make_guide


def brightness_guide(level: float = 0.5, device: str = "cpu"):
    """Loss = (mean pixel value - level)^2 per image; images are in [-1, 1].

    ``level`` arrives as a float (the registry converts ``level=0.2``). The loss
    averages over every pixel, so its gradient is small: the default preset ``auto``
    normalises it (any weight works alone); a fixed-strength preset needs ``weight=10`` or so.
    """
    if not -1.0 <= level <= 1.0:
        raise UgdError(f"brightness: level={level} is outside [-1, 1]; e.g. brightness:level=0.5")
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
        description="Mean brightness of the image (model-free example guide; with a fixed-strength preset use weight=10 or so)",
        params=[Param("level", "float", 0.5, "target mean pixel value in [-1, 1]")],
    )
