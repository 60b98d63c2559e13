"""A pinhole camera for rendering: intrinsics plus a world-to-camera transform."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray  # 4x4; camera axes are OpenCV's (x right, y down, z forward)

    @classmethod
    def look_at(cls, eye, target, width: int = 1280, height: int = 720, hfov_deg: float = 90.0,
                up=(0.0, 1.0, 0.0)) -> Camera:
        """A camera at ``eye`` looking at ``target`` with a horizontal field of view.

        (capture/ builds camera poses the same way; the two packages may not import each
        other, so each keeps its few lines.)
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if not 1.0 <= hfov_deg <= 170.0:
            raise ValueError(f"hfov_deg must be in 1..170, got {hfov_deg}")
        eye = np.asarray(eye, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(up, dtype=np.float64))
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        w2c = np.eye(4)
        w2c[:3, :3] = rot
        w2c[:3, 3] = -rot @ eye
        f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(width, height, f, f, (width - 1) / 2, (height - 1) / 2, w2c)

    @property
    def position(self) -> np.ndarray:
        rot, t = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -rot.T @ t

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2) and depth (N,) as (N, 3)."""
        p = np.asarray(points, dtype=np.float64) @ self.world_to_camera[:3, :3].T
        p += self.world_to_camera[:3, 3]
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([self.fx * p[:, 0] / z + self.cx, self.fy * p[:, 1] / z + self.cy, z], 1)
