"""Small things drawn into the room besides people: who is speaking."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from render.renderer import PlacedCloud
from render.room import Room

SPEAKING_COLOR = (60, 230, 90)


@lru_cache(maxsize=1)
def _disc(radius: float = 0.07, height: float = 2.0, points: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """A flat green disc over a participant's head, in their own frame (y up)."""
    rng = np.random.default_rng(0)
    r = radius * np.sqrt(rng.random(points))
    a = 2 * np.pi * rng.random(points)
    positions = np.stack([r * np.cos(a), np.full(points, height), r * np.sin(a)], axis=1).astype(np.float32)
    colors = np.tile(np.array(SPEAKING_COLOR, np.uint8), (points, 1))
    return positions, colors


def speaker_marker(room: Room, seat: int) -> PlacedCloud:
    """Drawn over the seat of whoever is speaking, so the room shows it."""
    positions, colors = _disc()
    return PlacedCloud(positions, colors, room.seat_pose(seat), point_size=0.012)
