"""A camera nobody calibrated is placed from the person and the floor it sees, so a real
camera's participant stands upright at their seat (not upside down in camera coordinates)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capture import BodyShape, SyntheticCamera
from capture.placement import place_camera
from capture.rgbd_source import RGBDSource
from holoport.point_sources import CameraPoints


class CameraCoordinates(RGBDSource):
    """The synthetic camera as a real one delivers its frames: no pose (identity). The
    true pose is kept to check the placement against."""

    name = "unplaced"

    def __init__(self) -> None:
        super().__init__()
        self.camera = SyntheticCamera(BodyShape.preset(0), seed=0)
        self.truth = self.camera.pose
        self.t = 0.0

    def _next_frame(self):
        frame = self.camera.read(self.t)
        self.t += 1 / 15
        frame.camera_pose = np.eye(4)
        return frame


def test_an_unplaced_camera_is_levelled_and_placed_from_the_floor_and_the_person():
    source = CameraPoints(CameraCoordinates(), crop="cut")
    positions, _ = source.read()
    pose, truth = source.pose, source.source.truth
    assert pose is not None
    # the camera's height above the floor and its tilt are the true ones
    assert pose[1, 3] == pytest.approx(truth[1, 3], abs=0.03)
    tilt = math.degrees(math.acos(np.clip(pose[1, :3] @ truth[1, :3], -1, 1)))
    assert tilt < 2.0
    # the person stands on the floor, upright, at the origin, facing the camera (+z)
    assert positions[:, 1].min() > -0.05 and 1.4 < positions[:, 1].max() < 2.1
    assert np.hypot(*positions[:, [0, 2]].mean(axis=0)) < 0.15
    assert pose[2, 3] > 1.5  # the camera is in front of them
    # later frames reuse the placement
    again, _ = source.read()
    assert source.pose is pose and again[:, 1].min() > -0.05


def test_without_a_floor_the_lowest_point_is_the_floor():
    rng = np.random.default_rng(0)
    # a column 1.7 m tall, 2 m in front of a level camera 1.2 m above its base (camera coordinates: y down)
    person = np.column_stack([rng.uniform(-0.2, 0.2, 5000), rng.uniform(-0.5, 1.2, 5000), rng.uniform(1.9, 2.1, 5000)])
    pose = place_camera(person)
    placed = person @ pose[:3, :3].T + pose[:3, 3]
    assert placed[:, 1].min() == pytest.approx(0.0, abs=1e-9) and placed[:, 1].max() == pytest.approx(1.7, abs=1e-3)
    assert pose[1, 3] == pytest.approx(1.2, abs=1e-3) and pose[2, 3] == pytest.approx(2.0, abs=0.02)
    with pytest.raises(ValueError, match="no points"):
        place_camera(np.zeros((0, 3)))
