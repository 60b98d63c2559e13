"""The person cut (capture.cut): each step on scenes with known answers, the kernels against
brute force, and real Kinect captures against Open3D and the captures' own depth gap.

Points carry their own index in their colour (24 bits), so every test knows exactly which
points survived, not only how many.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from capture import CropBox, SyntheticCamera, rgbd_to_points
from capture import _cut_kernels as kern
from capture.cut import CutReport, PersonCut

UP_CV = (0.0, -1.0, 0.0)  # "up" for a level camera in OpenCV camera coordinates


def _encode(n: int) -> np.ndarray:
    i = np.arange(n)
    return np.stack([(i >> 16) & 255, (i >> 8) & 255, i & 255], axis=1).astype(np.uint8)


def _decode(colors: np.ndarray) -> np.ndarray:
    c = colors.astype(np.int64)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _grid(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(a, b, indexing="ij")
    return u.ravel(), v.ravel()


def _box_surface(lo, hi, step: float = 0.01) -> np.ndarray:
    """Points on the six faces of an axis-aligned box, ``step`` apart (dense enough that
    even a corner has more than 8 points within a voxel of it)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    axes = [np.linspace(lo[c], hi[c], max(2, round((hi[c] - lo[c]) / step) + 1)) for c in range(3)]
    faces = []
    for c in range(3):
        a, b = [axes[o] for o in range(3) if o != c]
        u, v = _grid(a, b)
        for value in (lo[c], hi[c]):
            p = np.empty((u.size, 3))
            p[:, c] = value
            p[:, [o for o in range(3) if o != c]] = np.stack([u, v], 1)
            faces.append(p)
    return np.unique(np.concatenate(faces).round(6), axis=0)


def _box_distance(p: np.ndarray, lo, hi) -> np.ndarray:
    return np.linalg.norm(np.maximum(np.maximum(np.asarray(lo) - p, p - np.asarray(hi)), 0), axis=1)


PERSON = ((-0.25, 0.10, -0.15), (0.25, 1.80, 0.15))  # standing 10 cm clear of the floor's band
STOOL = ((0.80, 0.40, 0.80), (1.10, 0.70, 1.10))  # a smaller object, apart from the person


def _scene(floor: bool = True, wall: bool = False, seed: int = 0) -> tuple[np.ndarray, dict]:
    """A floor (y = 0, +-6 mm noise), a box-shaped person, a stool, 150 isolated outliers and
    optionally a back wall with more points than the floor. Returns positions and the
    indices of each part."""
    rng = np.random.default_rng(seed)
    parts = {}
    if floor:
        x, z = _grid(np.arange(-1.5, 1.5, 0.015), np.arange(-1.5, 1.5, 0.015))
        parts["floor"] = np.stack([x, np.clip(rng.normal(0, 0.002, x.size), -0.006, 0.006), z], 1)
    if wall:
        x, y = _grid(np.arange(-1.5, 1.5, 0.0125), np.arange(0.0, 2.5, 0.0125))
        parts["wall"] = np.stack([x, y, np.full(x.size, -1.6)], 1)
    parts["person"] = _box_surface(*PERSON)
    parts["stool"] = _box_surface(*STOOL)
    outliers = []
    while len(outliers) < 150:
        p = rng.uniform((-1.4, 0.3, -1.4), (1.4, 2.4, 1.4))
        if _box_distance(p[None], *PERSON)[0] < 0.15 or _box_distance(p[None], *STOOL)[0] < 0.15:
            continue
        if outliers and np.linalg.norm(np.array(outliers) - p, axis=1).min() < 0.15:
            continue
        outliers.append(p)
    parts["outliers"] = np.array(outliers)
    positions, index, start = [], {}, 0
    for name, p in parts.items():
        positions.append(p)
        index[name] = np.arange(start, start + len(p))
        start += len(p)
    return np.concatenate(positions).astype(np.float32), index


def _run(cut: PersonCut, positions: np.ndarray) -> tuple[np.ndarray, CutReport]:
    """The indices of the points ``cut`` keeps (checking the colours followed them) and its report."""
    kept, colors, report = cut.apply(positions, _encode(len(positions)))
    index = _decode(colors)
    np.testing.assert_array_equal(kept, positions[index])
    assert (np.diff(index) > 0).all(), "the cut keeps the input's order"
    return index, report


def _cut(cut: PersonCut, positions: np.ndarray) -> np.ndarray:
    """The indices of the points ``cut`` keeps."""
    return _run(cut, positions)[0]


def _all_but(index: dict, *names: str) -> np.ndarray:
    return np.sort(np.concatenate([v for k, v in index.items() if k not in names]))


# --- the whole cut and each step on a constructed scene ------------------------------------


def test_the_whole_cut_keeps_the_person_and_nothing_else():
    positions, index = _scene()
    kept, report = _run(PersonCut(), positions)
    np.testing.assert_array_equal(kept, index["person"])
    n = len(positions)
    stats = report.stats
    assert stats["input"] == stats["crop"] == n
    assert stats["floor"] == n - len(index["floor"])
    assert stats["outliers"] == n - len(index["floor"]) - len(index["outliers"])
    assert stats["cluster"] == stats["cluster_points"] == len(index["person"])
    normal, d = report.plane[:3], report.plane[3]
    assert normal @ (0, 1, 0) > math.cos(math.radians(0.5)) and abs(d) < 0.003
    assert set(report.timings) == {"crop", "floor", "outliers", "cluster", "total"}
    assert all(t >= 0 for t in report.timings.values())


def test_the_cut_keeps_no_state_between_calls():
    """One PersonCut serves every camera and thread: each call returns what it found."""
    positions, index = _scene()
    cut = PersonCut()
    kept, report = _run(cut, positions)
    plane = report.plane.copy()
    _, other = _run(cut, positions[index["person"]])  # no floor in these
    assert other is not report and other.stats["input"] == len(index["person"])
    np.testing.assert_array_equal(report.plane, plane)  # the first call's report is its own
    assert report.stats["input"] == len(positions)
    assert not hasattr(cut, "stats") and not hasattr(cut, "timings")
    np.testing.assert_array_equal(_cut(cut, positions), kept)


def test_the_floor_step_alone_removes_the_floor_exactly():
    positions, index = _scene()
    kept = _cut(PersonCut(outliers=None, cluster=False), positions)
    np.testing.assert_array_equal(kept, _all_but(index, "floor"))


def test_the_floor_step_removes_what_lies_under_the_floor_unless_told_not_to():
    positions, index = _scene()
    cellar = np.array([[0.3, -0.2, 0.3], [-0.5, -0.5, 0.1]], np.float32)
    positions = np.concatenate([positions, cellar])
    kept = _cut(PersonCut(outliers=None, cluster=False), positions)
    np.testing.assert_array_equal(kept, _all_but(index, "floor"))
    kept = _cut(PersonCut(outliers=None, cluster=False, floor_below=False), positions)
    np.testing.assert_array_equal(kept, np.r_[_all_but(index, "floor"), len(positions) - 2, len(positions) - 1])


def test_the_outlier_step_alone_removes_exactly_the_isolated_points():
    positions, index = _scene()
    for mode in ("radius", "statistical"):  # statistical: mean - 2 std is under 8 points here
        cut = PersonCut(floor=False, outliers=mode, cluster=False)
        kept, report = _run(cut, positions)
        np.testing.assert_array_equal(kept, _all_but(index, "outliers"), err_msg=mode)
        assert report.stats["outlier_threshold"] >= cut.outlier_min_points


def test_a_statistical_threshold_rises_with_the_spread_of_neighbour_counts():
    positions, _ = _scene()
    previous = None
    for ratio in (3.0, 1.0, 0.5, 0.0):  # 0: every point whose neighbourhood is below the mean goes
        cut = PersonCut(floor=False, cluster=False, outliers="statistical", outlier_std_ratio=ratio)
        stats = cut.apply(positions)[2].stats
        if previous is not None:
            assert stats["outlier_threshold"] >= previous["outlier_threshold"]
            assert stats["outliers"] <= previous["outliers"]
        previous = stats
    assert previous["outliers"] < len(positions) / 2 < stats["input"]


def test_the_cluster_step_alone_keeps_the_largest_component():
    positions, index = _scene(floor=False)
    np.testing.assert_array_equal(_cut(PersonCut(floor=False, outliers=None), positions), index["person"])


@pytest.mark.parametrize("voxels", [(0.025, 0.025), (0.02, 0.04)], ids=["shared-grid", "two-grids"])
def test_the_outlier_and_cluster_steps_agree_on_one_grid_or_two(voxels):
    positions, index = _scene()
    cut = PersonCut(outlier_voxel=voxels[0], cluster_voxel=voxels[1])
    np.testing.assert_array_equal(_cut(cut, positions), index["person"])


def test_the_cluster_near_a_seed_point_wins_over_the_largest():
    positions, index = _scene(floor=False)
    stool_top = (0.95, 0.75, 0.95)
    kept, report = _run(PersonCut(floor=False, cluster_near=stool_top, cluster_within=0.1), positions)
    np.testing.assert_array_equal(kept, index["stool"])
    assert report.stats["cluster_distance"] == pytest.approx(0.05, abs=0.01)
    # nobody within reach: nothing is kept, rather than the wrong thing
    cut = PersonCut(floor=False, cluster_near=(0, 3.5, 0), cluster_within=0.3)
    assert _cut(cut, positions).size == 0


def test_the_cluster_near_the_camera_is_chosen_from_the_camera_pose():
    positions, index = _scene(floor=False)
    pose = np.eye(4)
    pose[:3, 3] = (1.6, 0.55, 0.95)  # a camera right beside the stool, looking along +z
    cut = PersonCut.for_camera(pose, cluster_within=0.6)
    np.testing.assert_array_equal(_cut(cut, positions), index["stool"])
    cut = PersonCut.for_camera(pose)  # without a distance: the largest, wherever it is
    np.testing.assert_array_equal(_cut(cut, positions), index["person"])


def test_every_step_can_be_switched_off():
    positions, _ = _scene()
    positions[[5, 17]] = np.nan
    kept = _cut(PersonCut(floor=False, outliers=None, cluster=False), positions)
    np.testing.assert_array_equal(kept, np.setdiff1d(np.arange(len(positions)), [5, 17]))


def test_depth_range_and_box_crop_in_the_points_frame():
    positions, index = _scene(floor=False)
    pose = np.eye(4)
    pose[:3, :3] = np.diag([-1.0, 1.0, -1.0])  # looking along -z from z = 3 (rotation by pi about y)
    pose[:3, 3] = (0.0, 1.0, 3.0)
    cut = PersonCut.for_camera(pose, depth_range=(2.0, 3.5), floor=False, outliers=None, cluster=False)
    depth = 3.0 - positions[:, 2]
    np.testing.assert_array_equal(_cut(cut, positions), np.flatnonzero((depth >= 2.0) & (depth <= 3.5)))
    box = CropBox((-0.5, 0.0, -0.5), (0.5, 2.0, 0.5))
    cut = PersonCut(box=box, floor=False, outliers=None, cluster=False)
    inside = np.all((positions >= box.min) & (positions <= box.max), axis=1)
    np.testing.assert_array_equal(_cut(cut, positions), np.flatnonzero(inside))


def test_empty_and_tiny_inputs():
    empty, colors, report = PersonCut().apply(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    assert empty.shape == (0, 3) and colors.shape == (0, 3) and report.plane is None
    two, none, _ = PersonCut().apply(np.array([[0, 1, 0], [0, 1.01, 0]], np.float64))
    assert two.dtype == np.float32 and none is None and len(two) <= 2


def test_the_same_seed_gives_the_same_cut():
    positions, _ = _scene(wall=True)
    a, b, c = (_cut(PersonCut(seed=s), positions) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # and another seed finds the same floor here


# --- what makes a plane a floor ------------------------------------------------------------


def test_the_floor_is_found_behind_a_larger_back_wall():
    open3d = pytest.importorskip("open3d")
    positions, index = _scene(wall=True)
    assert len(index["wall"]) > len(index["floor"])
    every_fifth = positions[::5].astype(np.float64)  # enough for Open3D, and quick
    cloud = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(every_fifth))
    open3d.utility.random.seed(0)
    dominant, _ = cloud.segment_plane(0.02, 3, 200)
    assert abs(dominant[2]) > 0.99  # Open3D's dominant plane is the wall (normal along z)
    kept, report = _run(PersonCut(outliers=None, cluster=False), positions)
    assert report.plane[:3] @ (0, 1, 0) > math.cos(math.radians(0.5))
    wall = index["wall"]
    expected = np.r_[_all_but(index, "floor", "wall"), wall[positions[wall, 1] > 0.03]]
    np.testing.assert_array_equal(kept, np.sort(expected))


def test_a_desk_with_the_person_under_it_is_no_floor():
    rng = np.random.default_rng(1)
    x, z = _grid(np.arange(-0.6, 0.6, 0.01), np.arange(0.0, 0.6, 0.01))
    desk = np.stack([x, 0.75 + rng.normal(0, 0.002, x.size), z], 1)  # 7200 points, over a quarter
    torso = _box_surface((-0.25, 0.30, -0.50), (0.25, 1.30, -0.20))
    torso = torso[torso[:, 1] > 0.30]  # no camera sees a torso's underside (it would be a floor)
    positions = np.concatenate([desk, torso]).astype(np.float32)
    kept, report = _run(PersonCut(outliers=None, cluster=False), positions)
    assert len(kept) == len(positions) and report.plane is None
    # without the test for what lies under a floor, the desk would take the torso's lower half
    kept, report = _run(PersonCut(outliers=None, cluster=False, floor_max_below=1.0), positions)
    assert len(kept) < len(positions) and report.plane is not None


def test_the_floor_lies_well_under_a_known_camera():
    positions, index = _scene()
    pose = np.eye(4)
    pose[:3, :3] = np.diag([-1.0, 1.0, -1.0])
    for height, found in ((1.3, True), (0.3, False)):
        pose[1, 3] = height
        kept, report = _run(PersonCut.for_camera(pose, outliers=None, cluster=False), positions)
        assert (report.plane is not None) == found, height
        assert len(kept) == len(positions) - (len(index["floor"]) if found else 0)


def test_a_tilted_floor_is_found_within_the_angle_and_refused_beyond_it():
    positions, index = _scene()
    a = math.radians(12)
    rotation = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    tilted = (positions @ rotation.T).astype(np.float32)
    kept, report = _run(PersonCut(outliers=None, cluster=False), tilted)
    np.testing.assert_array_equal(kept, _all_but(index, "floor"))
    assert math.degrees(math.acos(report.plane[:3] @ rotation[:, 1])) < 0.5
    kept, report = _run(PersonCut(outliers=None, cluster=False, floor_max_angle=5), tilted)
    assert len(kept) == len(positions) and report.plane is None


def test_a_floor_holding_under_a_tenth_of_the_points_is_found_for_every_seed():
    positions, index = _scene(wall=True)
    half_the_floor = index["floor"][::2]
    cupboard = _box_surface((-1.4, 0.5, -1.2), (1.4, 2.4, -1.0)).astype(np.float32)
    positions = np.concatenate([positions[_all_but(index, "floor")], positions[half_the_floor], cupboard])
    assert len(half_the_floor) / len(positions) < 0.1
    for seed in range(5):
        report = PersonCut(outliers=None, cluster=False, seed=seed).apply(positions)[2]
        assert report.plane is not None and report.plane[1] > 0.9999, seed
        stats = report.stats
        assert stats["input"] - stats["floor"] == (positions[:, 1] <= 0.03).sum(), seed  # and the wall's foot


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"up": (0, 0, 0)}, "up"),
    ({"up": (0, 1)}, "up"),
    ({"camera": (0, 1, 2)}, "camera and forward"),
    ({"depth_range": (0.5, 3.0)}, "depth_range is measured from the camera"),
    ({"camera": (0, 0, 0), "forward": (0, 0, 1), "depth_range": (3.0, 0.5)}, "near < far"),
    ({"box": ((0, 0, 0), (1, 1, 1))}, "CropBox"),
    ({"box": CropBox((0, 0, 0), (1, 0, 1))}, "min < max"),
    ({"floor_threshold": 0}, "floor_threshold"),
    ({"floor_distance": -0.01}, "floor_distance"),
    ({"floor_max_angle": 90}, "floor_max_angle"),
    ({"floor_min_fraction": 1.5}, "floor_min_fraction"),
    ({"floor_max_below": -0.1}, "floor_max_below"),
    ({"floor_iterations": 2.5}, "floor_iterations"),
    ({"floor_sample": 2}, "floor_sample"),
    ({"outliers": "knn"}, "outliers"),
    ({"outlier_voxel": float("nan")}, "outlier_voxel"),
    ({"outlier_min_points": 0}, "outlier_min_points"),
    ({"cluster_voxel": 0}, "cluster_voxel"),
    ({"cluster_within": 1.0}, "cluster_within needs"),
    ({"cluster_near": (0, 1, 0), "cluster_within": -1}, "cluster_within"),
    ({"seed": True}, "seed"),
])
def test_bad_options_are_refused_on_construction(options, message):
    with pytest.raises(ValueError, match=message):
        PersonCut(**options)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="positions"):
        PersonCut().apply(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="colors"):
        PersonCut().apply(np.zeros((10, 3)), np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="pose"):
        PersonCut.for_camera(np.eye(3))
    with pytest.raises(ValueError, match="too large a volume"):
        PersonCut(floor=False).apply(np.array([[0, 0, 0], [1e15, 1e15, 1e15]], np.float32))


# --- the kernels against brute force --------------------------------------------------------


def _small_cloud(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blobs = [rng.normal(c, s, (n, 3)) for c, s, n in (((0, 0, 0), 0.05, 300), ((0.4, 0.1, 0), 0.03, 150),
                                                       ((0, 0.5, 0.3), 0.02, 40))]
    return np.concatenate([*blobs, rng.uniform(-0.5, 0.8, (30, 3))]).astype(np.float32)


def _grid_of(positions, voxel):
    idx, lo, hi = kern.crop(positions, np.zeros(3), np.array([0, 0, 1.0]), -np.inf, np.inf,
                            np.full(3, -np.inf), np.full(3, np.inf))
    keys, starts, vox, sx, sy, origin, ok = kern.voxelize(positions, idx, voxel, lo, hi)
    assert ok
    cells = np.stack([keys // sx, (keys % sx) // sy, keys % sy], 1)
    return idx, keys, starts, vox, sx, sy, origin, cells


def test_voxelize_matches_numpy():
    positions = _small_cloud()
    idx, keys, starts, vox, sx, sy, origin, cells = _grid_of(positions, 0.05)
    lo = positions.min(axis=0).astype(np.float64)
    expected = np.floor((positions - lo) * (1 / 0.05)).astype(np.int64) + 1  # padded by one voxel
    np.testing.assert_array_equal(cells[vox], expected)
    corner = origin + cells[vox] * 0.05  # and origin is the corner of voxel (0, 0, 0)
    assert ((positions >= corner - 1e-9) & (positions <= corner + 0.05 + 1e-9)).all()
    assert (np.diff(keys) > 0).all()
    np.testing.assert_array_equal(np.diff(starts), np.bincount(vox, minlength=len(keys)))
    assert expected.min() >= 1 and (expected.max(axis=0) < [sx // sy, sy, sy]).all()  # padded: no wrap


def test_radix_sort_matches_a_stable_numpy_sort():
    rng = np.random.default_rng(2)
    for bits in (1, 11, 23, 40):
        values = (rng.integers(0, 2**bits, 5000) << 7) | rng.integers(0, 128, 5000)  # sorted by bits 7..
        expected = values[np.argsort(values >> 7, kind="stable")]
        np.testing.assert_array_equal(kern._radix_sort(values, 7, bits), expected)


def test_neighbour_counts_match_brute_force():
    positions = _small_cloud()
    _, keys, starts, _, sx, sy, _, cells = _grid_of(positions, 0.03)
    own = np.diff(starts)
    near = np.abs(cells[:, None, :] - cells[None, :, :]).max(axis=2) <= 1
    expected = near.astype(np.int64) @ own
    np.testing.assert_array_equal(kern.neighbour_counts(keys, starts, sx, sy, 0), expected)
    lazy = kern.neighbour_counts(keys, starts, sx, sy, 6)  # only "at least 6 or not" matters
    short = expected < 6
    np.testing.assert_array_equal(lazy[short], expected[short])
    assert (lazy[~short] >= 6).all() and (lazy <= expected).all() and short.sum() >= 10


def test_components_match_brute_force():
    positions = _small_cloud()
    _, keys, _, _, sx, sy, _, cells = _grid_of(positions, 0.04)
    rng = np.random.default_rng(3)
    active = rng.random(len(keys)) < 0.9
    labels = kern.components(keys, sx, sy, active)
    adjacent = (np.abs(cells[:, None, :] - cells[None, :, :]).max(axis=2) <= 1) & active[:, None] & active[None, :]
    expected = np.full(len(keys), -1)
    for start in np.flatnonzero(active):  # breadth-first search; labels are the smallest member
        if expected[start] >= 0:
            continue
        expected[start], frontier = start, [start]
        while frontier:
            nxt = np.flatnonzero(adjacent[frontier].any(axis=0) & (expected < 0))
            expected[nxt] = start
            frontier = list(nxt)
    np.testing.assert_array_equal(labels, expected)
    assert len(set(labels[active])) >= 3


# --- real captures --------------------------------------------------------------------------


def _kinect(data_dir, name: str) -> np.ndarray:
    o3d = pytest.importorskip("open3d")
    path = data_dir / "pointclouds" / "kinect" / f"{name}.pcd"
    if not path.is_file():
        pytest.skip(f"{path} is not in the shared data")
    positions = np.asarray(o3d.io.read_point_cloud(str(path)).points, np.float32)
    return positions[np.isfinite(positions).all(axis=1)]


def test_a_real_person_is_cut_out_as_the_depth_gap_and_open3d_dbscan_say(data_dir):
    """person.pcd (PCL's Kinect sample): a head and shoulders 0.6-1.0 m from the camera, a
    20 cm gap in depth, then the room. The gap gives one independent answer; Open3D's DBSCAN
    (on 3 cm voxels, the cluster with a point within 1 m that holds the most points) another."""
    o3d = pytest.importorskip("open3d")
    positions = _kinect(data_dir, "person")
    truth = np.flatnonzero(positions[:, 2] < 1.05)
    assert 40_000 < len(truth) < 55_000 and not ((positions[:, 2] > 1.0) & (positions[:, 2] < 1.2)).any()
    kept, report = _run(PersonCut.for_camera(np.eye(4), up=UP_CV, cluster_within=1.0), positions)
    assert report.plane is None  # no floor in view, and the back wall is not one
    assert len(np.intersect1d(kept, truth)) / len(np.union1d(kept, truth)) > 0.99

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(positions.astype(np.float64)))
    down, _, traces = cloud.voxel_down_sample_and_trace(0.03, cloud.get_min_bound(), cloud.get_max_bound())
    labels = np.asarray(down.cluster_dbscan(eps=0.05, min_points=1))
    centres = np.asarray(down.points)
    members = [np.flatnonzero(labels == lab) for lab in range(labels.max() + 1)]
    sizes = [sum(len(traces[i]) for i in m) for m in members]
    near = [np.linalg.norm(centres[m], axis=1).min() < 1.0 for m in members]
    best = max((s, lab) for lab, s in enumerate(sizes) if near[lab])[1]
    dbscan = np.sort(np.concatenate([np.asarray(traces[i]) for i in members[best]]))
    assert len(np.intersect1d(kept, dbscan)) / len(np.union1d(kept, dbscan)) > 0.99


@pytest.mark.parametrize("name", ["room_capture0001", "room_capture0005"])
def test_a_real_floor_matches_open3d(data_dir, name):
    """A Kinect capture of a room (PCL's sample): our floor against Open3D's segment_plane on
    the points more than 0.6 m under the camera, where the floor is the dominant plane."""
    o3d = pytest.importorskip("open3d")
    positions = _kinect(data_dir, name)
    cut = PersonCut.for_camera(np.eye(4), up=UP_CV, outliers=None, cluster=False)
    kept, report = _run(cut, positions)
    plane = report.plane
    assert plane is not None
    low = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(positions[positions[:, 1] > 0.6].astype(np.float64)))
    o3d.utility.random.seed(0)
    reference, _ = low.segment_plane(0.02, 3, 200)
    reference = np.array(reference) / np.linalg.norm(reference[:3])
    reference *= np.sign(reference[:3] @ plane[:3])
    assert math.degrees(math.acos(min(1.0, reference[:3] @ plane[:3]))) < 2.0
    assert abs(reference[3] - plane[3]) < 0.03  # the camera's height above the floor, both ways
    on_reference = np.abs(positions @ reference[:3] + reference[3]) < cut.floor_distance
    removed = np.setdiff1d(np.arange(len(positions)), kept)
    assert abs(len(removed) - on_reference.sum()) < 0.05 * on_reference.sum()
    assert on_reference[removed].mean() > 0.9


def test_a_synthetic_frame_is_cut_to_the_person_the_crop_box_finds():
    """The whole synthetic frame (floor, back wall, person): cut from the camera's pose, the
    person is what the default crop box keeps above the floor."""
    frame = SyntheticCamera(seed=1).read(0.5)
    everything, colors = rgbd_to_points(frame, box=None)
    boxed, _ = rgbd_to_points(frame)
    cut = PersonCut.for_camera(frame.camera_pose, cluster_within=3.0)
    person, person_colors, report = cut.apply(everything, colors)
    assert len(person_colors) == len(person)
    a = set(map(tuple, np.round(person, 4)))
    b = set(map(tuple, np.round(boxed[boxed[:, 1] > cut.floor_distance], 4)))
    assert len(a & b) / len(a | b) > 0.99
    assert abs(report.plane[3]) < 0.005 and report.plane[1] > 0.9999


def test_voxel_downsample_matches_numpy():
    """One point per cell, the mean of its points; cells are counted from the cloud's corner."""
    from capture.cut import voxel_downsample

    rng = np.random.default_rng(3)
    pos = (rng.random((20_000, 3)) * [1.0, 2.0, 0.5] - 0.3).astype(np.float32)
    col = rng.integers(0, 256, (20_000, 3)).astype(np.uint8)
    voxel = 0.04
    out_pos, out_col = voxel_downsample(pos, col, voxel)
    cells = ((pos.astype(np.float64) - pos.min(0)) * (1.0 / voxel)).astype(np.int64)
    ref_cells, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    ref_pos = np.stack([np.bincount(inverse, pos[:, c].astype(np.float64)) for c in range(3)], 1) / counts[:, None]
    ref_col = np.stack([np.bincount(inverse, col[:, c].astype(np.float64)) for c in range(3)], 1) / counts[:, None]
    assert len(out_pos) == len(counts)
    # a cell's mean lies in the cell: order both by cell
    out_cells = ((out_pos.astype(np.float64) - pos.min(0)) * (1.0 / voxel)).astype(np.int64)
    order, ref_order = np.lexsort(out_cells.T), np.lexsort(ref_cells.T)
    assert np.array_equal(out_cells[order], ref_cells[ref_order])
    assert np.allclose(out_pos[order], ref_pos[ref_order], atol=1e-5)
    assert np.abs(out_col[order].astype(float) - ref_col[ref_order]).max() <= 0.5 + 1e-9
    with pytest.raises(ValueError, match="voxel"):
        voxel_downsample(pos, col, 0.0)
