"""Composite the room and every participant's cloud into one image, with a z-buffer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from render import _splat_kernels as sk
from render._kernels import BACKGROUND_ID, ROOM_ID, draw_room
from render.camera import Camera
from render.room import Room

BATCH = 4  # clouds per parallel launch: a tuple of this many arrays, compiled (and cached) once
_NO_CLOUD = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.eye(4), 1.0, 0)  # pads a batch


@dataclass
class PlacedCloud:
    """A participant's cloud in their own frame and the pose that seats it in the room."""

    positions: np.ndarray
    colors: np.ndarray
    pose: np.ndarray  # 4x4, participant frame -> room
    point_size: float | None = None  # metres a point covers (its sampling); None: the renderer's


@dataclass
class RenderResult:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32, camera-space z in metres, inf where nothing
    ids: np.ndarray  # (H, W) int16: index into the clouds, ROOM_ID, or BACKGROUND_ID

    def coverage(self, cloud_index: int) -> int:
        """How many pixels show cloud ``cloud_index``."""
        return int(np.count_nonzero(self.ids == cloud_index))


class Renderer:
    """Splats clouds into a pinhole view of the room, on every core numba has.

    Each point covers a square of ``point_size`` metres (about the capture's or the codec's
    sample spacing; a cloud may carry its own) seen at its depth, so near people render
    solid and far ones do not bloat; ``splat_px`` fixes the square's side in pixels
    instead (1, 3, 5...). ``fill_holes`` closes the one-pixel cracks uneven sampling leaves;
    ``soft_edges`` blends silhouettes into the room.

    Points with a NaN or infinite coordinate (a cloud from anywhere but our decoders, which
    refuse such streams) are never drawn; ``dropped_nonfinite`` counts them over all frames.
    """

    ROOM_ID = ROOM_ID
    BACKGROUND_ID = BACKGROUND_ID

    def __init__(self, point_size: float = 0.006, near: float = 0.05, splat_px: int | None = None,
                 fill_holes: bool = True, soft_edges: bool = False) -> None:
        if point_size <= 0:
            raise ValueError(f"point_size must be positive, got {point_size}")
        if splat_px is not None and not (isinstance(splat_px, int) and 1 <= splat_px <= 65 and splat_px % 2):
            raise ValueError(f"splat_px must be an odd number of pixels from 1 to 65, got {splat_px!r}")
        self.point_size = point_size
        self.near = near
        self.splat_px = splat_px
        self.fill_holes = fill_holes
        self.soft_edges = soft_edges
        self._layer_key: tuple | None = None
        self._layer = np.zeros((0, 0), np.uint64)
        self._bufs = np.zeros((0, 0, 0), np.uint64)
        self._mask = np.zeros((0, 0), np.uint8)  # finish's work array: which pixels are clouds'
        self.dropped_nonfinite = 0  # points left out for a NaN or infinite coordinate, all frames

    def render(self, camera: Camera, room: Room | None, clouds: Sequence[PlacedCloud]) -> RenderResult:
        if len(clouds) > sk.ROOM_CODE:  # owner codes 0..ROOM_CODE - 1
            raise ValueError(f"at most {sk.ROOM_CODE} clouds in one image, got {len(clouds)}")
        layer = self._room_layer(camera, room)
        jobs = []  # every cloud checked before any is drawn: a bad one leaves no half-drawn frame
        for index, cloud in enumerate(clouds):
            n = len(cloud.positions)
            if n == 0:
                continue
            # C-ordered and writable: a batch is a tuple of one array type (read-only views copy)
            pos = np.require(cloud.positions, np.float32, ["C", "W"])
            col = np.require(cloud.colors, np.uint8, ["C", "W"])
            if pos.shape != (n, 3) or col.shape != (n, 3):
                raise ValueError(f"cloud {index}: positions and colours must both be (N, 3), got "
                                 f"{pos.shape} and {col.shape}")
            size = self.point_size if cloud.point_size is None else float(cloud.point_size)
            jobs.append((pos, col, camera.world_to_camera @ np.asarray(cloud.pose, dtype=np.float64), size, index))
        bufs = self._buffers(layer)
        try:
            for start in range(0, len(jobs), BATCH):  # one parallel launch per BATCH clouds
                batch = jobs[start: start + BATCH]
                batch += [_NO_CLOUD] * (BATCH - len(batch))
                pos, col, transforms, sizes, codes = zip(*batch, strict=True)
                _, nonfinite = sk.splat_clouds(
                    pos, col, np.array(transforms), np.array(sizes, np.float64), np.array(codes, np.int64),
                    camera.fx, camera.fy, camera.cx, camera.cy, self.near,
                    0 if self.splat_px is None else self.splat_px, bufs)
                self.dropped_nonfinite += int(nonfinite)
            if len(bufs) > 1:
                sk.merge(bufs)
        except BaseException:  # interrupted: the next frame starts from fresh buffers
            self._bufs = np.zeros((0, 0, 0), np.uint64)
            raise
        h, w = layer.shape
        image = np.empty((h, w, 3), np.uint8)
        depth = np.empty((h, w), np.float32)
        ids = np.empty((h, w), np.int16)
        if self._mask.shape != (h, w):
            self._mask = np.empty((h, w), np.uint8)
        sk.finish(bufs[0], layer, self.fill_holes, self.soft_edges, self._mask, image, depth, ids)
        return RenderResult(image, depth, ids)

    def _buffers(self, layer: np.ndarray) -> np.ndarray:
        """One z-buffer per numba thread: the first starts as the room, the others empty.
        Allocated once per image size and thread count; ``sk.merge`` leaves the others
        empty after each frame."""
        shape = (numba.get_num_threads(), *layer.shape)
        fresh = self._bufs.shape != shape
        if fresh:
            self._bufs = np.empty(shape, np.uint64)
        sk.reset(self._bufs, layer, fresh)  # merge empties the others after each frame
        return self._bufs

    def _room_layer(self, camera: Camera, room: Room | None) -> np.ndarray:
        """The room seen from ``camera`` as packed keys; drawn once and reused while the
        camera stays put."""
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
        codes = np.where(ids == ROOM_ID, sk.ROOM_CODE, sk.BACKGROUND_CODE).astype(np.uint8)
        layer = np.empty((h, w), np.uint64)
        sk.pack_layer(image, depth, codes, layer)
        self._layer_key, self._layer = (camera, room), layer
        return layer
