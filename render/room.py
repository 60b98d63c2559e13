"""The shared virtual room: a round table with seats, a floor, a backdrop.

Every participant builds the same room from the same two numbers (seat count and the
table's size), carried by the hub's welcome, so everyone sees everyone in the same place.
Seat ``i`` sits at angle ``2*pi*i/seats`` around the table; its pose maps the participant's
own frame (origin on the floor under them, facing +z) into the room so that they face the
table's centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from render.camera import Camera


@dataclass(frozen=True)
class Room:
    seats: int = 3
    table_radius: float = 0.6
    table_height: float = 0.74
    seat_distance: float = 1.15  # from the table's centre to where a participant stands

    def __post_init__(self) -> None:
        if not 2 <= self.seats <= 16:
            raise ValueError(f"a room has 2..16 seats, got {self.seats}")
        if not 0 < self.table_radius < self.seat_distance:
            raise ValueError("the table must be smaller than the circle of seats")

    def seat_angle(self, seat: int) -> float:
        self._check(seat)
        return 2 * math.pi * seat / self.seats

    def seat_position(self, seat: int) -> np.ndarray:
        """Where the participant at ``seat`` stands, on the floor."""
        a = self.seat_angle(seat)
        return np.array([self.seat_distance * math.sin(a), 0.0, self.seat_distance * math.cos(a)])

    def seat_pose(self, seat: int) -> np.ndarray:
        """4x4 rigid transform from the participant's own frame into the room."""
        yaw = self.seat_angle(seat) + math.pi  # turn +z to face the table's centre
        c, s = math.cos(yaw), math.sin(yaw)
        pose = np.eye(4)
        pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        pose[:3, 3] = self.seat_position(seat)
        return pose

    def seat_camera(self, seat: int, width: int = 1280, height: int = 720,
                    hfov_deg: float = 90.0, eye_height: float = 1.45) -> Camera:
        """First-person view: from just behind the seat's head, looking across the table."""
        p = self.seat_position(seat)
        eye = p * (1.0 + 0.45 / self.seat_distance)
        eye[1] = eye_height
        return Camera.look_at(eye, (0.0, 0.92, 0.0), width, height, hfov_deg)

    def orbit_camera(self, angle: float, width: int = 1280, height: int = 720,
                     distance: float = 3.6, height_m: float = 2.4, hfov_deg: float = 70.0) -> Camera:
        """A free camera circling the table, for overviews and videos."""
        eye = (distance * math.sin(angle), height_m, distance * math.cos(angle))
        return Camera.look_at(eye, (0.0, 0.8, 0.0), width, height, hfov_deg)

    def _check(self, seat: int) -> None:
        if not 0 <= seat < self.seats:
            raise ValueError(f"seat {seat} does not exist in a room of {self.seats} seats")
