"""Composite the room and every participant's cloud into one image, with a z-buffer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from render._kernels import BACKGROUND_ID, ROOM_ID, draw_room, splat_points
from render.camera import Camera
from render.room import Room


@dataclass
class PlacedCloud:
    """A participant's cloud in their own frame and the pose that seats it in the room."""

    positions: np.ndarray
    colors: np.ndarray
    pose: np.ndarray  # 4x4, participant frame -> room


@dataclass
class RenderResult:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32, camera-space z in metres, inf where nothing
    ids: np.ndarray  # (H, W) int16: index into the clouds, ROOM_ID, or BACKGROUND_ID

    def coverage(self, cloud_index: int) -> int:
        """How many pixels show cloud ``cloud_index``."""
        return int(np.count_nonzero(self.ids == cloud_index))


class Renderer:
    """Splats clouds into a pinhole view of the room.

    ``point_size`` is the side in metres each point covers (about the capture's sample
    spacing), so nearby people render solid and distant ones don't bloat.
    """

    ROOM_ID = ROOM_ID
    BACKGROUND_ID = BACKGROUND_ID

    def __init__(self, point_size: float = 0.006, near: float = 0.05) -> None:
        if point_size <= 0:
            raise ValueError(f"point_size must be positive, got {point_size}")
        self.point_size = point_size
        self.near = near
        self._layer_key: tuple | None = None
        self._layer: tuple[np.ndarray, ...] = ()

    def render(self, camera: Camera, room: Room | None, clouds: Sequence[PlacedCloud]) -> RenderResult:
        image, depth, ids = (buf.copy() for buf in self._room_layer(camera, room))
        for index, cloud in enumerate(clouds):
            if len(cloud.positions) == 0:
                continue
            m = camera.world_to_camera @ np.asarray(cloud.pose, dtype=np.float64)
            splat_points(np.ascontiguousarray(cloud.positions, dtype=np.float32),
                         np.ascontiguousarray(cloud.colors, dtype=np.uint8), m, camera.fx,
                         camera.fy, camera.cx, camera.cy, self.point_size, index, self.near,
                         image, depth, ids)
        return RenderResult(image, depth, ids)

    def _room_layer(self, camera: Camera, room: Room | None) -> tuple[np.ndarray, ...]:
        """The room seen from ``camera``; drawn once and reused while the camera stays put."""
        if self._layer_key is not None and self._layer_key[0] is camera and self._layer_key[1] == room:
            return self._layer
        h, w = camera.height, camera.width
        image = np.zeros((h, w, 3), dtype=np.uint8)
        depth = np.full((h, w), np.inf, dtype=np.float32)
        ids = np.full((h, w), BACKGROUND_ID, dtype=np.int16)
        if room is not None:
            seats = np.array([room.seat_position(i)[[0, 2]] for i in range(room.seats)])
            draw_room(np.linalg.inv(camera.world_to_camera), camera.fx, camera.fy, camera.cx,
                      camera.cy, room.table_radius, room.table_height, seats, image, depth, ids)
        self._layer_key, self._layer = (camera, room), (image, depth, ids)
        return self._layer
