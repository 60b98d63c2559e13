"""Depth + colour images -> the person's coloured point cloud in the participant's frame."""

from __future__ import annotations

import numpy as np

from capture._kernels import backproject_crop
from capture.lens import rays
from capture.types import CropBox, RGBDFrame

DEFAULT_BOX = CropBox()


def rgbd_to_points(
    frame: RGBDFrame,
    box: CropBox | None = DEFAULT_BOX,
    depth_range: tuple[float, float] = (0.2, 6.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every valid depth pixel through the frame's lens (``capture.lens.rays``:
    intrinsics and distortion) and camera pose.

    Points outside ``depth_range`` (metres along the optical axis) or outside ``box`` (in
    the participant's frame) are dropped, which is what cuts the person out of the room.
    ``box=None`` keeps everything in range.
    """
    depth, color, k = frame.depth, frame.color, frame.intrinsics
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise ValueError(f"depth must be a uint16 image, got {depth.dtype} {depth.shape}")
    if color.shape != (*depth.shape, 3) or color.dtype != np.uint8:
        raise ValueError(f"color must be uint8 {(*depth.shape, 3)}, got {color.dtype} {color.shape}")
    if depth.shape != (k.height, k.width):
        raise ValueError(f"depth is {depth.shape[::-1]} but intrinsics say {k.width}x{k.height}")
    lo = np.array(box.min if box else (-np.inf,) * 3, dtype=np.float64)
    hi = np.array(box.max if box else (np.inf,) * 3, dtype=np.float64)
    out_pos = np.empty((depth.size, 3), dtype=np.float32)
    out_col = np.empty((depth.size, 3), dtype=np.uint8)
    n = backproject_crop(
        depth, color, rays(k), frame.depth_scale, depth_range[0], depth_range[1],
        np.ascontiguousarray(frame.camera_pose, dtype=np.float64), lo, hi, out_pos, out_col,
    )
    return out_pos[:n].copy(), out_col[:n].copy()
