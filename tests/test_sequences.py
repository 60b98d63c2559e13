"""RGB-D sequences on disk, checked against facts that do not come from our reader: the
datasets' own camera poses must bring their frames into one consistent room."""

from __future__ import annotations

import itertools

import numpy as np
import open3d as o3d
import pytest

from capture import RGBDFrame, rgbd_to_points
from capture.sequences import ImageSequence, quaternion_pose


@pytest.fixture(scope="module")
def rgbd_dir(data_dir):
    return data_dir / "rgbd"


def _cloud(frame: RGBDFrame, pose: np.ndarray) -> o3d.geometry.PointCloud:
    placed = RGBDFrame(frame.depth, frame.color, frame.intrinsics, frame.depth_scale, pose, frame.timestamp)
    positions, _ = rgbd_to_points(placed, box=None, depth_range=(0.2, 7.0))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(positions.astype(np.float64)))
    return cloud.voxel_down_sample(0.02)


def _fit(a, b) -> tuple[float, float, float, float]:
    """Fitness and inlier RMSE of b on a as placed (5 cm), and how far ICP then moves b
    (metres, degrees): small when the poses already agree."""
    ev = o3d.pipelines.registration.evaluate_registration(b, a, 0.05, np.eye(4))
    t = o3d.pipelines.registration.registration_icp(b, a, 0.05, np.eye(4)).transformation
    angle = np.degrees(np.arccos(np.clip((np.trace(t[:3, :3]) - 1) / 2, -1, 1)))
    return ev.fitness, ev.inlier_rmse, float(np.linalg.norm(t[:3, 3])), float(angle)


def test_slambook_poses_bring_its_five_frames_into_one_room(rgbd_dir):
    """Measured: consecutive frames overlap 36-75% within 5 cm (RMSE 2.4-2.7 cm) with the
    poses, 5-19% without; ICP then moves them 3.5-5.6 cm, 0.5-1.1 deg (the poses are a
    SLAM estimate from a Kinect v1). Inverted poses (the other convention) do not fit."""
    seq = ImageSequence(rgbd_dir / "slambook")
    assert seq.layout == "slambook" and len(seq) == 5 and seq.depth_scale == 0.001
    frames = list(seq)
    for a, b in itertools.pairwise(frames):
        fitness, rmse, moved, turned = _fit(_cloud(a, a.camera_pose), _cloud(b, b.camera_pose))
        bare, *_ = _fit(_cloud(a, np.eye(4)), _cloud(b, np.eye(4)))
        wrong, *_ = _fit(_cloud(a, np.linalg.inv(a.camera_pose)), _cloud(b, np.linalg.inv(b.camera_pose)))
        assert fitness > 0.3 and fitness > 2 * bare and fitness > 2 * wrong and rmse < 0.03
        assert moved < 0.08 and turned < 2.0


def test_redwood_trajectory_places_its_frames_within_a_centimetre(rgbd_dir):
    """Measured: first and last frame overlap 98% within 5 cm (RMSE 1.0 cm), ICP moves
    the last 3 mm and 0.12 deg; without the trajectory 9 cm and 2.75 deg."""
    seq = ImageSequence(rgbd_dir / "redwood-synthetic")
    assert seq.layout == "redwood" and len(seq) == 5
    k = seq.intrinsics
    assert (k.width, k.height, k.fx, k.fy, k.cx, k.cy) == (640, 480, 525.0, 525.0, 319.5, 239.5)
    first, last = seq.frame(0), seq.frame(4)
    fitness, rmse, moved, turned = _fit(_cloud(first, first.camera_pose), _cloud(last, last.camera_pose))
    assert fitness > 0.95 and rmse < 0.015 and moved < 0.01 and turned < 0.5
    *_, moved_bare, turned_bare = _fit(_cloud(first, np.eye(4)), _cloud(last, np.eye(4)))
    assert moved_bare > 5 * moved


def test_tum_depth_is_read_at_its_scale(rgbd_dir):
    """TUM stores depth in 1/5000 m: the indoor frame's median depth is 2.4 m (read as
    millimetres it would be 12 m, through the walls of an office)."""
    seq = ImageSequence(rgbd_dir / "tum")
    assert seq.layout == "tum" and len(seq) == 1
    f = seq.frame(0)
    assert 1.0 < np.median(f.depth[f.depth > 0]) * f.depth_scale < 4.0
    positions, _ = rgbd_to_points(f, box=None)
    assert len(positions) > 100_000


def test_a_quaternion_pose_is_a_rotation_and_its_convention_is_x_y_z_w():
    pose = quaternion_pose(1, 2, 3, 0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4))  # 90 deg about z
    assert pose[:3, 3].tolist() == [1, 2, 3]
    assert np.allclose(pose[:3, :3] @ [1, 0, 0], [0, 1, 0])
    with pytest.raises(ValueError):
        quaternion_pose(0, 0, 0, 0, 0, 0, 0)


def test_folders_that_are_not_sequences_say_so(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageSequence(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not a TUM, Redwood or slambook"):
        ImageSequence(tmp_path)


def test_realtime_playback_skips_what_a_slow_reader_missed(rgbd_dir):
    """Played at 10 fps, a reader that comes back 0.35 s later gets the frame due then
    (the fourth), not the next in the file; a loop goes on with increasing timestamps."""
    import time

    seq = ImageSequence(rgbd_dir / "slambook", fps=10.0, realtime=True, loop=True)
    first = seq.read()
    time.sleep(0.35)
    late = seq.read()
    assert first.meta["file"] == "1.pgm" and late.meta["file"] in ("4.pgm", "5.pgm")
    stamps = [first.timestamp, late.timestamp] + [seq.read().timestamp for _ in range(6)]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    fast = ImageSequence(rgbd_dir / "slambook", fps=10.0)  # not realtime: every frame, in order
    assert [f.meta["file"] for f in fast] == [f"{i}.pgm" for i in range(1, 6)]
