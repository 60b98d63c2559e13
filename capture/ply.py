"""Coloured point clouds from files (PLY, and whatever else Open3D reads: PCD, XYZRGB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A coloured PLY as float32 positions and uint8 colours (Open3D reads it)."""
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path))
    if not cloud.has_points():
        raise ValueError(f"{path} holds no points")
    positions = np.asarray(cloud.points, dtype=np.float32)
    colors = np.clip(np.rint(np.asarray(cloud.colors) * 255), 0, 255).astype(np.uint8)
    return positions, colors
