import math

import numpy as np
import pytest

from render import Camera, PlacedCloud, Renderer, Room

IDENTITY = np.eye(4)


def _camera(w=160, h=120):
    return Camera.look_at((0, 0, 0), (0, 0, 1), w, h, hfov_deg=90.0, up=(0, -1, 0))


def test_a_point_lands_where_the_pinhole_model_says():
    cam = _camera()
    p = np.array([[0.5, 0.25, 2.0]], np.float32)
    res = Renderer(point_size=1e-4).render(cam, None, [PlacedCloud(p, np.array([[9, 8, 7]], np.uint8), IDENTITY)])
    v, u = np.argwhere(res.ids == 0)[0]
    assert u == round(cam.fx * 0.5 / 2.0 + cam.cx) and v == round(cam.fy * 0.25 / 2.0 + cam.cy)
    assert tuple(res.image[v, u]) == (9, 8, 7) and res.depth[v, u] == pytest.approx(2.0)
    assert res.coverage(0) == 1


def test_the_nearer_point_wins_whatever_the_order():
    cam = _camera()
    near = PlacedCloud(np.array([[0, 0, 1.0]], np.float32), np.array([[255, 0, 0]], np.uint8), IDENTITY)
    far = PlacedCloud(np.array([[0, 0, 3.0]], np.float32), np.array([[0, 0, 255]], np.uint8), IDENTITY)
    for clouds, near_index in (([near, far], 0), ([far, near], 1)):
        res = Renderer(point_size=0.05).render(cam, None, clouds)
        centre = res.ids[60, 80]
        assert centre == near_index and tuple(res.image[60, 80]) == (255, 0, 0)


def test_splats_grow_as_points_come_closer():
    cam = _camera()
    cloud = lambda z: PlacedCloud(np.array([[0, 0, z]], np.float32), np.zeros((1, 3), np.uint8), IDENTITY)  # noqa: E731
    r = Renderer(point_size=0.05)
    assert r.render(cam, None, [cloud(0.5)]).coverage(0) > r.render(cam, None, [cloud(4.0)]).coverage(0)


def test_points_behind_the_camera_are_not_drawn():
    res = Renderer().render(_camera(), None, [PlacedCloud(np.array([[0, 0, -1.0]], np.float32),
                                                           np.zeros((1, 3), np.uint8), IDENTITY)])
    assert res.coverage(0) == 0


@pytest.mark.parametrize("seats", [2, 3, 5, 8])
def test_seat_poses_place_participants_around_the_table_facing_it(seats):
    room = Room(seats)
    for i in range(seats):
        pose = room.seat_pose(i)
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
        origin = pose @ [0, 0, 0, 1]
        assert math.hypot(origin[0], origin[2]) == pytest.approx(room.seat_distance)
        assert origin[1] == 0.0
        facing = pose[:3, :3] @ [0, 0, 1]  # the participant's +z
        to_centre = -origin[:3] / np.linalg.norm(origin[:3])
        np.testing.assert_allclose(facing, to_centre, atol=1e-12)
    positions = np.array([room.seat_position(i) for i in range(seats)])
    assert len(np.unique(positions.round(6), axis=0)) == seats


def test_the_room_draws_floor_table_and_backdrop():
    room = Room(3)
    res = Renderer().render(room.seat_camera(0, 320, 180), room, [])
    assert (res.ids == Renderer.ROOM_ID).mean() > 0.3
    assert (res.ids == Renderer.BACKGROUND_ID).any()
    cam = room.seat_camera(0, 320, 180)
    u, v, z = cam.project(np.array([[0.0, room.table_height, 0.0]]))[0]
    assert res.ids[int(v), int(u)] == Renderer.ROOM_ID
    assert res.depth[int(v), int(u)] == pytest.approx(z, rel=0.03)  # the table top (the floor is ~1 m further)


def test_the_table_hides_what_is_behind_it():
    room = Room(3)
    cam = room.seat_camera(0, 320, 180)
    u, v, z = cam.project(np.array([[0.0, room.table_height, 0.0]]))[0]
    # a point just below the table top's centre, seen from above: occluded
    hidden = PlacedCloud(np.array([[0, room.table_height - 0.1, 0]], np.float32),
                         np.full((1, 3), 255, np.uint8), IDENTITY)
    assert Renderer().render(cam, room, [hidden]).coverage(0) == 0


def test_room_rejects_impossible_configurations():
    with pytest.raises(ValueError):
        Room(1)
    with pytest.raises(ValueError, match="seat 3"):
        Room(3).seat_pose(3)
