"""Small value types of the capture path."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

#: Lens distortion models the ray table understands. Both take OpenCV's coefficient order
#: (k1, k2, p1, p2, k3, k4, k5, k6): "brown_conrady" is OpenCV's rational model (RealSense,
#: and the Azure Kinect's factory calibration, whose model of that name is the same
#: formula); "rational_6kt" is the Azure Kinect's older model, whose tangential terms lack
#: OpenCV's factor 2.
DISTORTION_MODELS = ("brown_conrady", "rational_6kt")


@dataclass(frozen=True)
class Intrinsics:
    """Intrinsics of a camera, in pixels, with its lens distortion.

    ``distortion`` holds up to 8 coefficients in OpenCV's order (missing ones are 0; empty
    = a pinhole). ``max_radius`` bounds the normalised radius (x² + y² on the z = 1 plane)
    where the distortion model is valid: the Azure Kinect's "metric radius"; 0 = no bound.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()
    distortion_model: str = "brown_conrady"
    max_radius: float = 0.0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        coeffs = tuple(float(c) for c in self.distortion)
        if len(coeffs) > 8 or not all(math.isfinite(c) for c in coeffs):
            raise ValueError(f"distortion takes up to 8 finite coefficients (k1 k2 p1 p2 k3 k4 k5 k6), got {coeffs}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f"distortion_model must be one of {DISTORTION_MODELS}, got {self.distortion_model!r}")
        if not self.max_radius >= 0:
            raise ValueError(f"max_radius must be >= 0, got {self.max_radius}")
        object.__setattr__(self, "distortion", coeffs)  # a list from JSON becomes hashable

    @property
    def coefficients(self) -> np.ndarray:
        """All 8 distortion coefficients, zero-padded, as the kernels take them."""
        out = np.zeros(8, np.float64)
        out[: len(self.distortion)] = self.distortion
        return out

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Intrinsics:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown intrinsics fields {sorted(unknown)}")
        return cls(**d)


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
