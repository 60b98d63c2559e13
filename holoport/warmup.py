"""Compile (or load from numba's cache) every kernel before time-critical work starts."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import numpy as np

import codec
from capture import BodyShape, Intrinsics, SyntheticCamera, rgbd_to_points
from capture.cut import PersonCut, voxel_downsample
from capture.lens import register
from render import PlacedCloud, Renderer, Room

log = logging.getLogger(__name__)


def warm_up(codecs: Iterable[codec.Codec] | None = None, cameras: bool = True) -> None:
    """Run the kernels a job will use once, on a tiny frame: the synthetic camera,
    back-projection and the renderer always; each of ``codecs`` (default: every registered
    codec as a meeting configures it) and a real camera's path (lens registration, person
    cut, voxels) when asked.

    The first run on a machine compiles them and numba caches the result next to the
    sources; later runs load the cache. How long each part takes, first and later:
    docs/design.md ("numba"), from ``python -m benchmarks.warmup_time``. Doing it in one
    process first keeps several processes from compiling the same kernels at once.
    """
    small = Intrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
    frame = SyntheticCamera(BodyShape(), small).read(0.0)
    positions, colors = rgbd_to_points(frame)
    if cameras:
        lens = dataclasses.replace(small, distortion=(0.1, 0.01, 0.0, 0.0, 0.0, 0.05))
        register(frame.depth, frame.depth_scale, lens, frame.color, small, np.eye(4))
        PersonCut().apply(*rgbd_to_points(frame, box=None))
        voxel_downsample(positions, colors, 0.005)
    for c in meeting_codecs() if codecs is None else codecs:
        payload = c.encoder().encode(codec.Cloud(positions, colors)).payload
        codec.decoder_for(payload).decode(payload)
    room = Room(3)
    Renderer().render(room.seat_camera(0, 64, 36), room,
                      [PlacedCloud(positions, colors, room.seat_pose(1))])


def meeting_codecs() -> list[codec.Codec]:
    """Every registered codec as a meeting configures it, less those that cannot be made
    here (a plug-in whose library is not installed, e.g. DracoPy)."""
    made = []
    for name in codec.available("cloud"):
        try:
            made.append(codec.for_meeting(name))
        except ValueError as exc:
            log.info("not warming up codec %s: %s", name, exc)
    return made
