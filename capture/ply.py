"""Coloured point clouds from files (PLY, and whatever else Open3D reads: PCD, XYZRGB), and to PLY."""

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


def write_ply(path: Path, positions: np.ndarray, colors: np.ndarray | None = None) -> None:
    """A binary PLY of float32 x y z, and uchar red green blue when ``colors`` is given (the
    layout of the MVUB frames, which Draco's and G-PCC's tools read)."""
    fields = [("p", "<f4", 3)] + ([("c", "u1", 3)] if colors is not None else [])
    rows = np.empty(len(positions), dtype=fields)
    rows["p"] = positions
    props = "property float x\nproperty float y\nproperty float z\n"
    if colors is not None:
        rows["c"] = colors
        props += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(rows)}\n{props}end_header\n"
    Path(path).write_bytes(header.encode("ascii") + rows.tobytes())
