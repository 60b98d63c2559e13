"""Calibration of several cameras, checked against answers that do not come from our code:
a real Azure Kinect's depth-to-colour transform as the shared data's README gives it, and
synthetic cameras whose poses we chose."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from capture import RGBDFrame, SyntheticCamera, rgbd_to_points
from capture.calibration import (
    CharucoBoard,
    board_pose,
    calibrate,
    detect_charuco,
    floor_frame,
    invert,
    load_opencv_intrinsics,
    poses_on_floor,
    refine_icp,
    relative_pose,
    rotation_angle_deg,
)
from capture.geometry import look_at_pose
from capture.rig import Rig, RigCamera, RigError, fuse
from capture.types import Intrinsics

# The README's depth (IR) -> colour transform of the Kinect sample, x_colour = R x_depth + t.
README_T_MM = np.array([-32.5, -1.7, 4.3])
README_ANGLE_DEG = 5.06


def _rotation(axis, degrees: float) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis, np.float64) / np.linalg.norm(axis) * math.radians(degrees))[0]


def _transform(rotation: np.ndarray, translation) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rotation, translation
    return t


def _errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Translation error (metres) and rotation error (degrees) of one 4x4 against another."""
    return (float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3])),
            rotation_angle_deg(estimate[:3, :3] @ truth[:3, :3].T))


# -- the real Azure Kinect pair ------------------------------------------------------------


@pytest.fixture(scope="module")
def kinect(data_dir):
    folder = data_dir / "calibration" / "azure-kinect-charuco"
    if not (folder / "board_plane.json").is_file():
        pytest.skip(f"no ChArUco calibration data at {folder}")
    board = CharucoBoard.from_json(folder / "board_plane.json")
    images = {"color": folder / "color-0.jpg", "ir": folder / "ir-0.png"}
    intrinsics = {"color": load_opencv_intrinsics(folder / "calib_color.yml"),
                  "ir": load_opencv_intrinsics(folder / "calib_ir.yml")}
    return board, images, intrinsics


def test_kinect_board_description(kinect):
    board, _, intrinsics = kinect
    assert (board.squares_x, board.squares_y, board.dictionary) == (14, 9, cv2.aruco.DICT_5X5_250)
    assert board.square_length == pytest.approx(0.040) and board.marker_length == pytest.approx(0.030)
    # 14x9: an odd row count, so OpenCV's legacy and current patterns are the same board
    assert not board.patterns_differ
    assert np.array_equal(board.opencv(False).generateImage((560, 360)), board.opencv(True).generateImage((560, 360)))
    k, dist = intrinsics["ir"]
    assert k.shape == (3, 3) and dist.shape == (8,) and k[0, 0] == pytest.approx(503.584, abs=1e-3)


def test_kinect_corners_and_reprojection(kinect):
    """Measured: 91 IR and 104 colour corners, 0.177 and 0.279 px RMS (the README: 91, 104,
    0.18, 0.28)."""
    board, images, intrinsics = kinect
    for name, expected in (("ir", 91), ("color", 104)):
        corners, ids = detect_charuco(images[name], board)
        assert abs(len(ids) - expected) <= 3, (name, len(ids))
        assert corners.shape == (len(ids), 2) and np.all(np.diff(ids) > 0)
        pose, rms = board_pose(corners, ids, board, *intrinsics[name])
        assert rms < 0.5, (name, rms)
        # z into the board: the board's normal points away from the camera that sees it
        assert pose[:3, 2] @ pose[:3, 3] > 0


def test_kinect_depth_to_color_matches_readme(kinect, tmp_path):
    """Measured: t = (-32.50, -1.66, 4.35) mm, 5.063 deg: 0.06 mm and 0.003 deg from the README."""
    board, images, intrinsics = kinect
    rig = calibrate(images, intrinsics, board, reference="color")
    assert np.array_equal(rig.pose("color"), np.eye(4))
    depth_to_color = rig.pose("ir")  # IR camera -> colour camera frame
    t_mm = depth_to_color[:3, 3] * 1000
    assert np.linalg.norm(t_mm - README_T_MM) < 2.0, t_mm
    assert abs(rotation_angle_deg(depth_to_color) - README_ANGLE_DEG) < 0.3
    for cam in rig.cameras:
        assert cam.reprojection_rms_px < 0.5
    assert rig.camera("ir").intrinsics.width == 1024 and rig.camera("color").intrinsics.width == 4096
    rig.save(tmp_path / "cameras.json")
    again = Rig.load(tmp_path / "cameras.json")
    assert np.allclose(again.pose("ir"), depth_to_color, atol=1e-12)


def test_holoport_calibrate_command(kinect, tmp_path):
    """The command line, as a process: the cameras file it writes holds the same answer."""
    import subprocess

    from tests.conftest import ROOT, holoport_cmd

    folder = kinect[1]["ir"].parent
    out = tmp_path / "rig.json"
    run = subprocess.run(holoport_cmd("calibrate", str(out), "--board", str(folder / "board_plane.json"),
                                      "--camera", "depth", str(folder / "ir-0.png"), str(folder / "calib_ir.yml"),
                                      "--camera", "color", str(folder / "color-0.jpg"),
                                      str(folder / "calib_color.yml")),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rig = Rig.load(out)
    assert rig.reference == "depth" and np.array_equal(rig.pose("depth"), np.eye(4))
    depth_to_color = invert(rig.pose("color"))  # the file holds colour -> depth
    assert np.linalg.norm(depth_to_color[:3, 3] * 1000 - README_T_MM) < 2.0
    assert abs(rotation_angle_deg(depth_to_color[:3, :3]) - README_ANGLE_DEG) < 0.3
    bad = subprocess.run(holoport_cmd("calibrate", str(tmp_path / "x.json"), "--camera", "depth",
                                      str(folder / "calib_ir.yml"), str(folder / "calib_ir.yml")),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and not (tmp_path / "x.json").exists()


# -- synthetic cameras with known poses -----------------------------------------------------

SYN_K = np.array([[900.0, 0, 640.0], [0, 900.0, 480.0], [0, 0, 1]])
SYN_SIZE = (1280, 960)


def render_board(board: CharucoBoard, board_to_camera: np.ndarray, K: np.ndarray = SYN_K,
                 size: tuple[int, int] = SYN_SIZE, legacy: bool = False) -> np.ndarray:
    """What a pinhole camera sees of the flat board: the generated board image warped by
    the plane's homography K [r1 r2 t], rendered at twice the size and area-averaged down."""
    px = 60  # board image pixels per square
    art = board.opencv(legacy).generateImage((board.squares_x * px, board.squares_y * px))
    m = board.square_length / px  # metres per board pixel; pixel i covers [i, i+1) * m
    to_board = np.array([[m, 0, 0.5 * m], [0, m, 0.5 * m], [0, 0, 1]])
    up2 = np.array([[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]])  # low-res pixel centre u -> 2u + 0.5
    plane = board_to_camera[:3][:, [0, 1, 3]]
    h = up2 @ K @ plane @ to_board
    big = cv2.warpPerspective(art, h, (2 * size[0], 2 * size[1]), flags=cv2.INTER_LINEAR, borderValue=255)
    return cv2.resize(big, size, interpolation=cv2.INTER_AREA)


def _board_to_camera(board: CharucoBoard, offset) -> np.ndarray:
    """A camera at board centre + ``offset`` (board frame: the printed face is at -z) looking at its centre."""
    camera_to_board = look_at_pose(board.center + np.asarray(offset), board.center, up=(0.0, -1.0, 0.0))
    return invert(camera_to_board)


def test_synthetic_rig_recovers_known_poses():
    """Measured: each pose within 0.3-0.5 mm and 0.02 deg, 0.17-0.19 px RMS (the detector's
    own corner noise, ~0.15 px, on these rendered images); relative pose 0.4 mm, 0.04 deg."""
    board = CharucoBoard(14, 9, 0.04, 0.03, "DICT_5X5_250")
    truth = {"a": _board_to_camera(board, (0.10, -0.05, -0.75)),
             "b": _board_to_camera(board, (-0.40, 0.12, -0.65))}
    for name, pose in truth.items():
        corners, ids = detect_charuco(render_board(board, pose), board, label=name)
        assert len(ids) >= 100  # 13 x 8 = 104 inner corners
        estimate, rms = board_pose(corners, ids, board, SYN_K, np.zeros(5))
        assert rms < 0.3
        dt, dr = _errors(estimate, pose)
        assert dt < 1e-3 and dr < 0.1, (name, dt, dr)
    images = {name: render_board(board, pose) for name, pose in truth.items()}
    rig = calibrate(images, {n: (SYN_K, np.zeros(5)) for n in truth}, board, reference="a")
    dt, dr = _errors(rig.pose("b"), relative_pose(truth["a"], truth["b"]))
    assert dt < 1e-3 and dr < 0.1, (dt, dr)
    assert rig.camera("b").intrinsics.width == 1280


def test_even_row_board_picks_the_printed_pattern():
    """An 8x6 board prints differently in OpenCV's legacy pattern: read with the wrong one,
    its markers are seen but no corner fits; calibrate tries both and keeps the one that
    fits. Measured: 35 corners, 0.08 px; relative pose within 1.2 mm and 0.09 deg (35
    corners of a nearly frontal board pin its rotation less well than 104)."""
    board = CharucoBoard(8, 6, 0.05, 0.037, cv2.aruco.DICT_4X4_50)
    assert board.patterns_differ
    truth = {"a": _board_to_camera(board, (0.2, 0.1, -0.75)), "b": _board_to_camera(board, (-0.3, -0.1, -0.7))}
    images = {name: render_board(board, pose, legacy=True) for name, pose in truth.items()}
    with pytest.raises(ValueError, match="markers were seen but none fit a 8x6 board"):
        detect_charuco(images["a"], board, legacy=False)
    assert len(detect_charuco(images["a"], board, legacy=True)[1]) == 35
    rig = calibrate(images, {n: (SYN_K, None) for n in truth}, board, reference="a")
    dt, dr = _errors(rig.pose("b"), relative_pose(truth["a"], truth["b"]))
    assert dt < 3e-3 and dr < 0.3, (dt, dr)
    assert all(c.reprojection_rms_px < 0.2 for c in rig.cameras)


def test_floor_frame_puts_the_board_on_the_floor_facing_the_camera():
    board = CharucoBoard(14, 9, 0.04, 0.03)
    # a camera 1.2 m above the floor and 2 m away, looking down at the board on the floor
    participant_to_board = np.eye(4)
    # the participant's x, y (up, out of the printed face) and z axes in board coordinates
    participant_to_board[:3, :3] = np.stack([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]], axis=1)
    participant_to_board[:3, 3] = board.center
    camera_to_participant = look_at_pose((0.0, 1.2, 2.0), (0.0, 0.0, 0.0))
    board_to_camera = invert(participant_to_board @ camera_to_participant)
    assert board_to_camera[:3, 2] @ board_to_camera[:3, 3] > 0  # the camera sees the printed face
    got = poses_on_floor({"front": board_to_camera}, board, "front")["front"]
    dt, dr = _errors(got, camera_to_participant)
    assert dt < 1e-9 and dr < 1e-6
    assert np.allclose(floor_frame(board, board_to_camera) @ np.append(board.center, 1), (0, 0, 0, 1))
    with pytest.raises(ValueError, match="face up"):
        floor_frame(board, invert(participant_to_board @ look_at_pose((0, -1.2, 2), (0, 0, 0))))


def test_detection_errors_are_clear(tmp_path):
    board = CharucoBoard(14, 9, 0.04, 0.03)
    with pytest.raises(ValueError, match="no ChArUco corners found in .*blank.png: is the board in view"):
        path = tmp_path / "blank.png"
        cv2.imwrite(str(path), np.full((480, 640), 128, np.uint8))
        detect_charuco(path, board)
    image = render_board(board, _board_to_camera(board, (0, 0, -0.8)))
    with pytest.raises(ValueError, match="is the board in view"):  # markers of another dictionary
        detect_charuco(image, CharucoBoard(14, 9, 0.04, 0.03, cv2.aruco.DICT_4X4_50))
    corners, ids = detect_charuco(image, board)
    with pytest.raises(ValueError, match="too few"):
        board_pose(corners[:3], ids[:3], board, SYN_K)
    with pytest.raises(ValueError, match="one line"):
        row = ids < 13
        board_pose(corners[row], ids[row], board, SYN_K)
    with pytest.raises(ValueError, match="camera matrix"):
        board_pose(corners, ids, board, np.eye(2))
    with pytest.raises(ValueError, match="metres"):
        CharucoBoard(14, 9, 40, 30)
    with pytest.raises(ValueError, match="unknown ArUco dictionary"):
        CharucoBoard(14, 9, 0.04, 0.03, "DICT_9X9_1")
    # a 16-bit IR-like image (values in the hundreds) is stretched, not divided down to black
    ir = (image.astype(np.uint16) * 3 + 40).astype(np.uint16)
    assert len(detect_charuco(ir, board)[1]) == len(ids)


# -- ICP refinement -------------------------------------------------------------------------


def _camera_cloud(camera: SyntheticCamera) -> np.ndarray:
    """The synthetic camera's points (person, floor, wall) in its own coordinates."""
    frame = camera.read(0.5)
    own = RGBDFrame(frame.depth, frame.color, frame.intrinsics, frame.depth_scale, np.eye(4), frame.timestamp)
    return rgbd_to_points(own, box=None, depth_range=(0.2, 4.5))[0]


@pytest.fixture(scope="module")
def two_views():
    small = Intrinsics(320, 288, 252.0, 252.0, 159.5, 143.5)
    front = SyntheticCamera(intrinsics=small, camera_position=(0.0, 1.25, 2.3))
    side = SyntheticCamera(intrinsics=small, camera_position=(1.0, 1.45, 2.0), look_at=(0.0, 0.9, 0.0))
    return front, side


def test_icp_recovers_a_perturbed_pose(two_views):
    """Measured: from 5.6 cm and 3 deg off (wall points 3.5 m away move 20 cm), a coarse
    pass (2 cm voxels, 25 cm pairs) then a fine one (1 cm, 3 cm) land within 1.1 mm and
    0.007 deg; fitness 0.80, RMSE 9.7 mm (the side camera's depth noise)."""
    front, side = two_views
    target, source = _camera_cloud(front), _camera_cloud(side)
    truth = invert(front.pose) @ side.pose  # side camera -> front camera
    nudge = _transform(_rotation((0.3, 1.0, -0.2), 3.0), (0.02, -0.015, 0.015))
    init = nudge @ truth
    dt0, dr0 = _errors(init, truth)
    assert dt0 > 0.02 and dr0 > 2.5
    coarse = refine_icp(source, target, init, max_distance=0.25, voxel=0.02)
    fine = refine_icp(source, target, coarse.transform, max_distance=0.03, voxel=0.01)
    dt, dr = _errors(fine.transform, truth)
    assert dt < 0.005 and dr < 0.5, (dt, dr)
    assert fine.fitness > 0.5 and fine.rmse < 0.01
    with pytest.raises(ValueError, match="no point pairs"):
        refine_icp(source, target + 10.0, truth, max_distance=0.05)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        refine_icp(source[:, :2], target, truth, 0.05)
    with pytest.raises(RigError, match="not rigid"):
        refine_icp(source, target, np.diag([2.0, 2, 2, 1]), 0.05)


def test_calibrate_refines_with_clouds(two_views):
    """A board 2 m from the cameras, 250 px wide, pins their relative pose only to 16.5 mm
    and 0.58 deg (measured); ICP on their clouds then brings it to 0.3 mm and 0.003 deg
    (fitness 0.78, RMSE 8.9 mm), and the rig keeps those figures."""
    front, side = two_views
    board = CharucoBoard(14, 9, 0.04, 0.03)
    # the board stands in the room; its pose in each camera follows from the cameras' world poses
    board_to_world = _transform(np.diag([1.0, -1.0, -1.0]), (-0.28, 1.3, 0.4))  # upright, facing +z
    truth = {"front": invert(front.pose) @ board_to_world, "side": invert(side.pose) @ board_to_world}
    images = {n: render_board(board, t) for n, t in truth.items()}
    clouds = {"front": _camera_cloud(front), "side": _camera_cloud(side)}
    intrinsics = {n: (SYN_K, np.zeros(5)) for n in truth}
    board_only = _errors(calibrate(images, intrinsics, board, "front").pose("side"), invert(front.pose) @ side.pose)
    rig = calibrate(images, intrinsics, board, "front", clouds=clouds)
    dt, dr = _errors(rig.pose("side"), invert(front.pose) @ side.pose)
    assert dt < 0.005 and dr < 0.3 and dt < board_only[0], (dt, dr, board_only)
    assert rig.camera("side").icp["fitness"] > 0.5 and rig.camera("front").icp is None


# -- the cameras file -----------------------------------------------------------------------


def _rig() -> Rig:
    k = Intrinsics(640, 576, 504.0, 504.5, 319.5, 287.5, (-0.2, 0.04, 1e-4, 0.0, 0.02, 0.09, -0.1, 0.06))
    side = _transform(_rotation((0, 1, 0), 60), (1.2, 0.0, 0.4))
    return Rig([RigCamera("front", np.eye(4), k, 0.18, None),
                RigCamera("side", side, None, None, {"fitness": 0.9, "rmse_m": 0.004})], reference="front")


def test_rig_round_trip(tmp_path):
    rig = _rig()
    rig.save(tmp_path / "cameras.json")
    d = json.loads((tmp_path / "cameras.json").read_text())
    assert d["format"] == "holoport-cameras" and d["version"] == 1 and d["reference"] == "front"
    assert len(d["cameras"][0]["intrinsics"]["distortion"]) == 8
    back = Rig.load(tmp_path / "cameras.json")
    assert back.names == ["front", "side"] and back.reference == "front"
    assert np.allclose(back.pose("side"), rig.pose("side"), atol=1e-15)
    assert back.camera("front").intrinsics == rig.camera("front").intrinsics
    assert back.camera("front").reprojection_rms_px == 0.18 and back.camera("side").icp == {"fitness": 0.9,
                                                                                            "rmse_m": 0.004}
    with pytest.raises(RigError, match="no camera 'top'"):
        back.pose("top")


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("format"), "format"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.update(reference="top"), "reference 'top' is not one of"),
    (lambda d: d.update(cameras=[]), "cameras: must be a non-empty list"),
    (lambda d: d["cameras"][1].pop("pose"), r"cameras\[1\].pose: missing"),
    (lambda d: d["cameras"][0].pop("name"), r"cameras\[0\].name: missing"),
    (lambda d: d["cameras"][1].update(name="front"), "unique"),
    (lambda d: d["cameras"][1].update(pose=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]), r"pose: must be 4 rows of 4"),
    (lambda d: d["cameras"][1]["pose"][0].__setitem__(0, 2.0), "not rigid"),
    (lambda d: d["cameras"][1].update(pose=np.diag([1.0, 1, -1, 1]).tolist()), "mirror"),
    (lambda d: d["cameras"][1]["pose"][0].__setitem__(3, 1200.0), "millimetres"),
    (lambda d: d["cameras"][1]["pose"][3].__setitem__(0, 1.0), "last row"),
    (lambda d: d["cameras"][1]["pose"][1].__setitem__(1, "x"), r"pose\[1\]\[1\]: must be a finite number"),
    (lambda d: d["cameras"][0]["intrinsics"].pop("fx"), r"intrinsics.fx: missing"),
    (lambda d: d["cameras"][0]["intrinsics"].update(width=-1), "width: must be a positive integer"),
    (lambda d: d["cameras"][0]["intrinsics"].update(distortion=[0.0] * 9), "up to 8 numbers"),
    (lambda d: d["cameras"][0].update(reprojection_rms_px=-1), "reprojection_rms_px: must be >= 0"),
    (lambda d: d["cameras"][1]["icp"].pop("rmse_m"), r"icp.rmse_m: missing"),
    (lambda d: d["cameras"][1]["icp"].update(fitness=1.5), r"fitness: must be in \[0, 1\]"),
    (lambda d: d["cameras"][1].update(intrinsic={}), "unknown field"),
])
def test_rig_rejects_malformed_files(tmp_path, change, message):
    d = _rig().to_dict()
    change(d)
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps(d))
    with pytest.raises(RigError, match=message) as info:
        Rig.load(path)
    assert str(path) in str(info.value)


def test_rig_load_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="holoport calibrate"):
        Rig.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RigError, match="not JSON"):
        Rig.load(tmp_path / "bad.json")


# -- fusion ---------------------------------------------------------------------------------


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each point of a to its nearest neighbour in b."""
    import open3d as o3d

    def cloud(p):
        return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(p, np.float64)))

    return np.asarray(cloud(a).compute_point_cloud_distance(cloud(b)))


def test_fuse_lands_both_cameras_on_one_object():
    """A box sampled in the participant's frame, seen by two cameras as points in their own
    coordinates: the right poses put the halves on each other, wrong ones do not."""
    rng = np.random.default_rng(3)
    box = rng.uniform(-1, 1, (6000, 3)) * (0.2, 0.5, 0.15)
    face = rng.integers(0, 3, len(box))
    box[np.arange(len(box)), face] = np.sign(box[np.arange(len(box)), face]) * np.array([0.2, 0.5, 0.15])[face]
    box += (0, 1.0, 0)
    poses = [look_at_pose((0.3, 1.3, 2.0), (0, 1, 0)), look_at_pose((-1.5, 1.4, 1.2), (0, 1, 0))]
    halves = [box[:3000], box[3000:]]
    clouds = [((h - p[:3, 3]) @ p[:3, :3]).astype(np.float32) for h, p in zip(halves, poses, strict=True)]
    colors = [np.full((3000, 3), c, np.uint8) for c in (200, 50)]
    positions, cols = fuse(list(zip(clouds, colors, strict=True)), poses)
    assert positions.dtype == np.float32 and cols.dtype == np.uint8 and len(positions) == 6000
    assert np.abs(positions - box).max() < 1e-5
    d = _nearest(positions[3000:], positions[:3000])
    assert np.median(d) < 0.02
    wrong = [poses[0], poses[1] @ _transform(_rotation((0, 1, 0), 10), (0.05, 0, 0))]
    bad, _ = fuse(list(zip(clouds, colors, strict=True)), wrong)
    assert np.median(_nearest(bad[3000:], bad[:3000])) > 3 * np.median(d)
    merged, merged_cols = fuse(list(zip(clouds, colors, strict=True)), poses, voxel=0.05)
    assert len(merged) < len(positions) and merged_cols.dtype == np.uint8
    assert _nearest(merged, box).max() < 0.05 * math.sqrt(3)
    with pytest.raises(ValueError, match="2 clouds but 1 poses"):
        fuse(list(zip(clouds, colors, strict=True)), poses[:1])
    with pytest.raises(ValueError, match="colors must be uint8"):
        fuse([(clouds[0], colors[0].astype(np.float32))], poses[:1])
