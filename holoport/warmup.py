"""Compile (or load from numba's cache) every kernel before time-critical work starts."""

from __future__ import annotations

import dataclasses

import numpy as np

import codec
from capture import BodyShape, Intrinsics, SyntheticCamera, rgbd_to_points
from capture.cut import PersonCut, voxel_downsample
from capture.lens import register
from render import PlacedCloud, Renderer, Room


def warm_up() -> None:
    """Run the capture and render kernels once on a tiny frame.

    The first run on a machine compiles them (tens of seconds) and numba caches the result
    next to the sources; later runs load the cache in a fraction of a second. Doing it in
    one process first keeps several processes from compiling the same kernels at once.
    """
    small = Intrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
    frame = SyntheticCamera(BodyShape(), small).read(0.0)
    lens = dataclasses.replace(small, distortion=(0.1, 0.01, 0.0, 0.0, 0.0, 0.05))
    register(frame.depth, frame.depth_scale, lens, frame.color, small, np.eye(4))
    positions, colors = rgbd_to_points(frame)
    PersonCut().apply(*rgbd_to_points(frame, box=None))
    voxel_downsample(positions, colors, 0.005)
    codec.decode(codec.OctreeCodec(depth=6, color_step=1).encode(positions, colors))
    codec.decode(codec.OctreeCodec(depth=6, color_step=8).encode(positions, colors))
    room = Room(3)
    Renderer().render(room.seat_camera(0, 64, 36), room,
                      [PlacedCloud(positions, colors, room.seat_pose(1))])
