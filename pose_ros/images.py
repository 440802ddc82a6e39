"""What every stage expects of an input image: its channel orders and the one check of an
(H, W, 3) uint8 array. The detectors, the models' preprocessing, the pipeline and drawing use it."""

from __future__ import annotations

import numpy as np

#: Channel orders an image (or a network's weights) may use.
COLOR_ORDERS: tuple[str, ...] = ("RGB", "BGR")


def check_color_order(value: str, name: str = "color_order") -> str:
    """``value`` if it is one of :data:`COLOR_ORDERS`, else a ValueError naming ``name``."""
    if value not in COLOR_ORDERS:
        raise ValueError(f"{name} must be one of {COLOR_ORDERS}, got {value!r}")
    return value


def check_image(image: np.ndarray, color_order: str) -> np.ndarray:
    """Validate an input image; return it C-contiguous (torch.from_numpy needs that).

    Args:
        image: (H, W, 3) uint8.
        color_order: "RGB" or "BGR".
    """
    check_color_order(color_order)
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.shape[0] == 0
        or image.shape[1] == 0
    ):
        described = (
            f"{image.dtype} array of shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise ValueError(f"expected an (H, W, 3) uint8 image, got a {described}")
    return np.ascontiguousarray(image)
