"""Small value types of the capture path."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a depth camera, in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")


@dataclass(frozen=True)
class CropBox:
    """Axis-aligned box in the participant's frame that holds the person and nothing else.

    The default keeps a 1.6 m wide, 2.3 m tall, 1.2 m deep column above the floor, and
    ``min_y`` a few centimetres above 0 removes the floor the person stands on.
    """

    min: tuple[float, float, float] = (-0.8, 0.03, -0.6)
    max: tuple[float, float, float] = (0.8, 2.3, 0.6)


@dataclass
class RGBDFrame:
    """One registered depth + colour image pair, as a camera or recording delivers it.

    ``depth`` is uint16 in units of ``depth_scale`` metres (0 = no reading); ``color`` is
    uint8 RGB of the same size (already registered to depth); ``camera_pose`` is the 4x4
    transform from camera coordinates to the participant's frame.
    """

    depth: np.ndarray
    color: np.ndarray
    intrinsics: Intrinsics
    depth_scale: float
    camera_pose: np.ndarray
    timestamp: float
    index: int = 0
    meta: dict = field(default_factory=dict)
