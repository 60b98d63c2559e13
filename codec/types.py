"""The point cloud convention shared with capture and render: numpy arrays, nothing more.

A cloud is ``positions`` float32 (N, 3) in metres and ``colors`` uint8 (N, 3) RGB.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Cloud(NamedTuple):
    """A point cloud frame, as codecs take and give it: ``positions, colors = cloud``."""

    positions: np.ndarray
    colors: np.ndarray


def validate_cloud(positions: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and dtypes early, with a message that says what was expected."""
    positions = np.asarray(positions)
    colors = np.asarray(colors)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    if colors.shape != positions.shape:
        raise ValueError(f"colors must have shape {positions.shape}, got {colors.shape}")
    if colors.dtype != np.uint8:
        raise ValueError(f"colors must be uint8 RGB, got {colors.dtype}")
    if not np.issubdtype(positions.dtype, np.floating):
        raise ValueError(f"positions must be floating point metres, got {positions.dtype}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinity")
    return positions, colors
