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


def _dots(points, color=(200, 10, 10)):
    p = np.array(points, np.float32)
    return PlacedCloud(p, np.tile(np.array(color, np.uint8), (len(p), 1)), IDENTITY)


def _at(cam, u, v, z):
    """The camera-space point that projects to pixel (u, v) at depth z."""
    return ((u - cam.cx) * z / cam.fx, (v - cam.cy) * z / cam.fy, z)


def test_a_one_pixel_crack_is_filled_and_a_wider_gap_stays_open():
    cam = _camera()
    z = 2.0
    row = [_at(cam, u, 60, z) for u in (40, 42, 50, 53)]  # gaps of one pixel (41) and two (51, 52)
    for fill in (True, False):
        res = Renderer(splat_px=1, fill_holes=fill).render(cam, None, [_dots(row)])
        assert (res.ids[60, 41] == 0) == fill  # the crack between two points
        assert res.ids[60, 51] != 0 and res.ids[60, 52] != 0  # two pixels wide: a real gap
        if fill:
            assert tuple(res.image[60, 41]) == (200, 10, 10) and res.depth[60, 41] == pytest.approx(z, abs=1e-4)


def test_fixed_splats_cover_their_square_and_auto_splats_follow_each_clouds_point_size():
    cam = _camera()
    p = [_at(cam, 80, 60, 2.0)]
    for side in (1, 3, 5):
        assert Renderer(splat_px=side, fill_holes=False).render(cam, None, [_dots(p)]).coverage(0) == side * side
    cloud = _dots(p)
    cloud.point_size = 0.05  # 0.05 m at 2 m: fx * 0.05 / 2 = 2 pixels a side
    side = int(cam.fx * 0.05 / 2.0 + 0.5)
    assert Renderer(point_size=1e-4, fill_holes=False).render(cam, None, [cloud]).coverage(0) == side * side


def test_soft_edges_blend_silhouettes_into_the_room_and_keep_the_inside():
    room = Room(4)
    cam = room.orbit_camera(0.0, 160, 120)
    block = np.array([(x, y, 0.0) for x in np.linspace(-0.3, 0.3, 60) for y in np.linspace(0.8, 1.4, 60)],
                     np.float32)
    cloud = PlacedCloud(block, np.full((len(block), 3), 250, np.uint8), np.eye(4))
    hard = Renderer(point_size=0.02).render(cam, room, [cloud])
    soft = Renderer(point_size=0.02, soft_edges=True).render(cam, room, [cloud])
    inside = hard.ids == 0
    edge = inside & ~(np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1))
    core = inside & ~edge
    assert edge.any() and core.any()
    assert (soft.image[core] == 250).all()  # the inside keeps its colour
    assert (soft.image[edge] < 250).any(axis=1).all()  # every silhouette pixel took some room
    assert (hard.image[edge] == 250).all()


def test_every_thread_count_draws_the_same_image_and_leaves_nothing_for_the_next_frame():
    import numba

    room = Room(4)
    cam = room.seat_camera(0, 200, 120)
    rng = np.random.default_rng(0)
    clouds = [PlacedCloud(rng.normal((0, 1.3, 0), (0.2, 0.3, 0.1), (20_000, 3)).astype(np.float32),
                          rng.integers(0, 256, (20_000, 3), dtype=np.uint8), room.seat_pose(s)) for s in (1, 2, 3)]
    saved = numba.get_num_threads()
    try:
        results = []
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            r = Renderer()
            results.append(r.render(cam, room, clouds))
            empty = r.render(cam, room, [])  # the same renderer, reusing its buffers
            assert not (empty.ids >= 0).any()
            np.testing.assert_array_equal(empty.image, Renderer().render(cam, room, []).image)
        for res in results[1:]:
            np.testing.assert_array_equal(res.image, results[0].image)
            np.testing.assert_array_equal(res.ids, results[0].ids)
    finally:
        numba.set_num_threads(saved)


def test_more_clouds_than_one_launch_takes_are_all_drawn_with_their_own_ids():
    from render.renderer import BATCH

    cam = _camera()
    clouds = [_dots([_at(cam, 10 + 12 * k, 60, 2.0)], color=(k, 2 * k, 3 * k)) for k in range(BATCH + 3)]
    clouds.insert(2, _dots(np.zeros((0, 3))))  # an empty cloud keeps its index free
    res = Renderer(splat_px=1, fill_holes=False).render(cam, None, clouds)
    for index, cloud in enumerate(clouds):
        if len(cloud.positions):
            k = index if index < 2 else index - 1
            assert res.ids[60, 10 + 12 * k] == index and tuple(res.image[60, 10 + 12 * k]) == (k, 2 * k, 3 * k)
    assert sorted(set(res.ids[res.ids >= 0].tolist())) == [i for i in range(len(clouds)) if i != 2]


@pytest.mark.parametrize("splat_px", [None, 1, 5])
def test_non_finite_points_are_never_drawn_and_are_counted(splat_px):
    """NaN and infinite coordinates, mixed among a cloud's points (and a cloud of nothing
    else), leave the image exactly as the finite points alone draw it; the renderer counts
    them, over clouds in more than one launch and over frames."""
    from render.renderer import BATCH

    room = Room(BATCH + 2)
    cam = room.seat_camera(0, 200, 120)
    rng = np.random.default_rng(1)
    inf, nan = np.inf, np.nan
    bad = np.array([[nan, 1, 0], [inf, 1, 0], [-inf, 1, 0], [0, inf, 0], [0, 1, inf], [0, 1, -inf],
                    [nan, nan, nan], [inf, -inf, nan], [0.1, 1.2, nan]], np.float32)
    clean, dirty = [], []
    for seat in range(1, BATCH + 2):
        pos = rng.normal((0, 1.3, 0), (0.2, 0.3, 0.1), (3000, 3)).astype(np.float32)
        col = rng.integers(0, 256, (3000, 3), dtype=np.uint8)
        at = np.sort(rng.integers(0, len(pos) + 1, len(bad)))
        clean.append(PlacedCloud(pos, col, room.seat_pose(seat)))
        dirty.append(PlacedCloud(np.insert(pos, at, bad, axis=0), np.insert(col, at, 255, axis=0),
                                 room.seat_pose(seat)))
    dirty.append(PlacedCloud(bad, np.full(bad.shape, 255, np.uint8), room.seat_pose(1)))  # nothing but bad points
    want = Renderer(splat_px=splat_px).render(cam, room, clean)
    r = Renderer(splat_px=splat_px)
    for frame in (1, 2):
        got = r.render(cam, room, dirty)
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.depth, want.depth)
        np.testing.assert_array_equal(got.ids, want.ids)
        assert r.dropped_nonfinite == frame * len(bad) * len(dirty)
