import numpy as np
import pytest

from capture import BodyShape, CropBox, Intrinsics, RGBDFrame, SyntheticCamera, rgbd_to_points
from capture.geometry import look_at_pose

K = Intrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)


def _frame(depth, color=None, pose=None):
    color = np.zeros((*depth.shape, 3), np.uint8) if color is None else color
    return RGBDFrame(depth, color, K, 0.001, np.eye(4) if pose is None else pose, 0.0)


def test_known_intrinsics_give_known_distances():
    depth = np.full((48, 64), 2000, np.uint16)  # a wall 2 m in front of the camera
    positions, _ = rgbd_to_points(_frame(depth), box=None)
    assert len(positions) == 64 * 48
    np.testing.assert_allclose(positions[:, 2], 2.0)
    # neighbouring pixels are z/fx = 4 cm apart on the wall; the image spans 63 of them
    assert positions[:, 0].max() - positions[:, 0].min() == pytest.approx(63 * 2.0 / 50.0)
    assert positions[:, 1].max() - positions[:, 1].min() == pytest.approx(47 * 2.0 / 50.0)
    # the principal point maps onto the optical axis
    centre = positions[np.argmin(np.abs(positions[:, 0]) + np.abs(positions[:, 1]))]
    assert abs(centre[0]) < 0.021 and abs(centre[1]) < 0.021


def test_zero_depth_and_out_of_range_pixels_are_dropped():
    depth = np.full((48, 64), 2000, np.uint16)
    depth[:10] = 0
    depth[10:20] = 9000
    positions, colors = rgbd_to_points(_frame(depth), box=None, depth_range=(0.2, 6.0))
    assert len(positions) == 28 * 64 == len(colors)


def test_the_pose_moves_points_into_the_participant_frame():
    pose = look_at_pose((0.0, 1.5, 2.0), (0.0, 1.5, 0.0))  # camera looking along -z
    depth = np.full((48, 64), 2000, np.uint16)
    positions, _ = rgbd_to_points(_frame(depth, pose=pose), box=None)
    np.testing.assert_allclose(positions[:, 2], 0.0, atol=1e-5)  # the wall is the z=0 plane
    top = positions[np.argmin(positions[:, 1])]
    assert top[1] < 1.5  # image rows go down, so y (up) decreases with v


def test_colors_follow_their_pixels():
    depth = np.full((48, 64), 1000, np.uint16)
    color = np.zeros((48, 64, 3), np.uint8)
    color[:, 32:] = (255, 0, 0)
    positions, colors = rgbd_to_points(_frame(depth, color), box=None)
    right = positions[:, 0] > 0
    assert (colors[right] == (255, 0, 0)).all() and (colors[~right] == 0).all()


def test_bad_images_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="uint16"):
        rgbd_to_points(_frame(np.zeros((48, 64), np.float32)))
    with pytest.raises(ValueError, match="intrinsics"):
        rgbd_to_points(RGBDFrame(np.zeros((10, 10), np.uint16), np.zeros((10, 10, 3), np.uint8),
                                 K, 0.001, np.eye(4), 0.0))


def test_synthetic_camera_sees_the_room_but_the_cloud_is_only_the_person():
    cam = SyntheticCamera(BodyShape.preset(0), seed=0)
    frame = cam.read(0.5)
    assert frame.depth.dtype == np.uint16 and frame.color.shape == (576, 640, 3)
    room, _ = rgbd_to_points(frame, box=None)
    person, _ = rgbd_to_points(frame)
    assert len(room) > 0.9 * 640 * 576  # floor and wall fill the frame
    assert 10_000 < len(person) < 0.3 * len(room)
    box = CropBox()
    assert (person[:, 1] >= box.min[1]).all()  # no floor
    assert person[:, 2].min() > -0.4  # no wall (it is at z = -1.4)
    # the person stands at the origin and is about as tall as the body says
    assert abs(np.median(person[:, 0])) < 0.1 and abs(np.median(person[:, 2])) < 0.2
    assert person[:, 1].max() == pytest.approx(BodyShape.preset(0).height, abs=0.06)


def test_participants_differ_and_arms_move():
    clouds = [rgbd_to_points(SyntheticCamera(BodyShape.preset(i), seed=i).read(1.0))
              for i in range(3)]
    heights = [p[:, 1].max() for p, _ in clouds]
    assert len({round(h, 2) for h in heights}) == 3
    shirt_colors = [tuple(np.median(c[(p[:, 1] > 1.2) & (p[:, 1] < 1.3)], axis=0))
                     for p, c in clouds]
    assert len(set(shirt_colors)) == 3
    cam = SyntheticCamera(BodyShape.preset(0), seed=0)
    a, _ = rgbd_to_points(cam.read(0.0))
    b, _ = rgbd_to_points(cam.read(0.8))
    arm_a = a[(a[:, 1] > 0.9) & (np.abs(a[:, 0]) > 0.3)]
    arm_b = b[(b[:, 1] > 0.9) & (np.abs(b[:, 0]) > 0.3)]
    assert abs(len(arm_a) - len(arm_b)) > 200  # arms were raised differently


def test_synthetic_frames_are_deterministic():
    a = SyntheticCamera(BodyShape.preset(1), seed=4).read(0.3)
    b = SyntheticCamera(BodyShape.preset(1), seed=4).read(0.3)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.color, b.color)
