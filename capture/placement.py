"""Placing a camera nobody calibrated: camera coordinates -> the participant's frame.

The room seats a participant by their own frame (metres, y up, origin on the floor under
them, +z toward their camera). A camera's points are in OpenCV camera coordinates (y down,
origin at the lens); without a cameras file from ``holoport calibrate`` the pose between
the two comes from the person and the floor the person cut found: up is the floor's normal
(the camera's -y when no floor is in view), the floor is that plane (the person's lowest
point when none), the origin is under the person's centroid, and +z points level from the
person toward the camera.
"""

from __future__ import annotations

import numpy as np


def place_camera(positions: np.ndarray, plane: np.ndarray | None = None) -> np.ndarray:
    """The 4x4 camera -> participant pose from the person's points in camera coordinates
    and the floor ``plane`` (nx, ny, nz, d: n·p + d is the height above it, n pointing up)."""
    p = np.asarray(positions, np.float64).reshape(-1, 3)
    if len(p) == 0:
        raise ValueError("no points to place the camera by: is anyone in front of it?")
    if plane is not None:
        up = np.asarray(plane[:3], np.float64)
        d = float(plane[3]) / np.linalg.norm(up)
        up /= np.linalg.norm(up)
    else:
        up = np.array([0.0, -1.0, 0.0])
        d = -float((p @ up).min())  # the floor under the lowest point
    centroid = p.mean(axis=0)
    foot = centroid - (centroid @ up + d) * up
    toward = -foot - (-foot @ up) * up  # from the person to the camera (at the origin), level
    if np.linalg.norm(toward) < 1e-6:  # the camera straight above: face its image's bottom
        toward = np.array([0.0, 1.0, 0.0]) - up[1] * up
    z = toward / np.linalg.norm(toward)
    x = np.cross(up, z)
    rotation = np.stack([x, up, z])  # rows: the participant's axes in camera coordinates
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = -rotation @ foot
    return pose
