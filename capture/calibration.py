"""Where each camera is: ChArUco board poses, camera poses in one frame, ICP refinement.

Several cameras film one participant; their clouds only fuse if each camera's pose in the
participant's frame is known to millimetres. One shot of a ChArUco board that every camera
sees gives each camera's pose relative to the board (detection + solvePnP, to a fraction of
a pixel), hence relative to each other. Where cameras also give depth, point-to-plane ICP
on their overlapping clouds then fixes what the board pins down poorly: a board seen small
(250 px wide at 2 m) leaves the relative pose off by ~1.5 cm and 0.6 deg (tests), and depth
biases that the colour/IR image never shows.

Frames: the board's frame is OpenCV's (origin at the outer corner of the first square, x
along the ``squares_x`` squares, y along the ``squares_y`` squares, z into the board, away
from its printed face). A board pose is board -> camera; a camera pose is camera -> rig
frame. The rig frame is the reference camera's own, or (``frame="floor"``) the
participant's frame of a board lying face up on the floor where the participant stands.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

try:
    import cv2
except ImportError as e:  # an extra: the rest of capture works without it
    raise ImportError("calibration needs OpenCV: pip install 'holoport[calibration]'") from e

from capture.rig import Rig, RigCamera, check_pose
from capture.types import Intrinsics

#: Fewer corners than this cannot give a pose (solvePnP needs 4 non-collinear points).
MIN_CORNERS = 4


@dataclass(frozen=True)
class CharucoBoard:
    """A printed ChArUco board. Lengths in metres; ``dictionary`` is OpenCV's predefined
    ArUco dictionary id (6 = DICT_5X5_250) or its name.

    ``legacy`` is OpenCV's ``setLegacyPattern``: boards printed by OpenCV < 4.6 (and some
    other generators) start with a white square where newer ones start with a black one.
    The two patterns differ only when ``squares_y`` is even; ``None`` lets
    :func:`calibrate` try both and keep the one with the lower reprojection error.
    """

    squares_x: int
    squares_y: int
    square_length: float
    marker_length: float
    dictionary: int | str = cv2.aruco.DICT_5X5_250
    legacy: bool | None = None

    def __post_init__(self) -> None:
        if self.squares_x < 2 or self.squares_y < 2:
            raise ValueError(f"a ChArUco board needs at least 2x2 squares, got {self.squares_x}x{self.squares_y}")
        if not 0 < self.marker_length < self.square_length:
            raise ValueError(f"marker_length must be in (0, square_length = {self.square_length}), "
                             f"got {self.marker_length}")
        if self.square_length > 1.0:
            raise ValueError(f"square_length {self.square_length} m is over a metre: lengths are in metres")
        object.__setattr__(self, "dictionary", _dictionary_id(self.dictionary))

    @classmethod
    def from_json(cls, path: str | os.PathLike, unit: float = 0.001, legacy: bool | None = None) -> CharucoBoard:
        """A board description as the Azure Kinect SDK's calibration example writes it
        (``board_plane.json``: ``shapes[0]`` with squares_x/y, square_length, marker_length
        in ``unit`` metres, millimetres by default, and aruco_dict_name = OpenCV's id)."""
        path = Path(path)
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON: {e}") from None
        shapes = spec.get("shapes") if isinstance(spec, dict) else None
        shape = shapes[0] if isinstance(shapes, list) and shapes else spec
        if not isinstance(shape, dict) or shape.get("shape", "charuco") != "charuco":
            raise ValueError(f"{path}: no ChArUco board description (expected shapes[0] with shape 'charuco')")
        missing = [k for k in ("squares_x", "squares_y", "square_length", "marker_length") if k not in shape]
        if missing:
            raise ValueError(f"{path}: board description lacks {missing}")
        return cls(int(shape["squares_x"]), int(shape["squares_y"]), float(shape["square_length"]) * unit,
                   float(shape["marker_length"]) * unit, shape.get("aruco_dict_name", cv2.aruco.DICT_5X5_250),
                   legacy)

    @property
    def patterns_differ(self) -> bool:
        """Whether OpenCV's legacy and current patterns of this board differ (even row count)."""
        return self.squares_y % 2 == 0

    @property
    def center(self) -> np.ndarray:
        """The board's centre in its own frame (metres)."""
        return np.array([self.squares_x * self.square_length / 2, self.squares_y * self.square_length / 2, 0.0])

    def opencv(self, legacy: bool | None = None) -> cv2.aruco.CharucoBoard:
        """OpenCV's board object (``legacy`` overrides the board's own setting)."""
        board = cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_length, self.marker_length,
                                       cv2.aruco.getPredefinedDictionary(self.dictionary))
        use = self.legacy if legacy is None else legacy
        board.setLegacyPattern(bool(use))
        return board

    def corner_points(self) -> np.ndarray:
        """(M, 3) float64: every inner chessboard corner in the board's frame, by ChArUco id."""
        return np.asarray(self.opencv().getChessboardCorners(), np.float64).reshape(-1, 3)


def _dictionary_id(d: int | str) -> int:
    if isinstance(d, str):
        name = d.upper() if d.upper().startswith("DICT_") else "DICT_" + d.upper()
        if not hasattr(cv2.aruco, name):
            raise ValueError(f"unknown ArUco dictionary {d!r} (for example DICT_5X5_250)")
        d = getattr(cv2.aruco, name)
    try:
        cv2.aruco.getPredefinedDictionary(int(d))
    except cv2.error:
        raise ValueError(f"unknown ArUco dictionary id {d!r}") from None
    return int(d)


def load_opencv_intrinsics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(K 3x3, distortion) from an OpenCV FileStorage file (YAML/XML/JSON) with ``K`` and
    ``dist`` (or ``camera_matrix`` and ``distortion_coefficients``, as calibrateCamera's
    samples write them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no intrinsics file at {path}")
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    try:
        k = next((m for m in (fs.getNode(n).mat() for n in ("K", "camera_matrix")) if m is not None), None)
        d = next((m for m in (fs.getNode(n).mat() for n in ("dist", "distortion_coefficients")) if m is not None),
                 None)
    finally:
        fs.release()
    if k is None or k.shape != (3, 3):
        raise ValueError(f"{path}: no 3x3 camera matrix 'K' (or 'camera_matrix')")
    return np.asarray(k, np.float64), (np.zeros(0) if d is None else np.asarray(d, np.float64).ravel())


def to_gray8(image: np.ndarray) -> np.ndarray:
    """An 8-bit grey image for the marker detector. Colour arrays are taken as RGB. A 16-bit
    IR image holds most of its pixels in a few hundred counts with specular highlights far
    above, so it is stretched between its 1st and 99.5th percentiles rather than scaled."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = cv2.cvtColor(img[..., :3].astype(img.dtype, copy=False), cv2.COLOR_RGB2GRAY)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"expected a grey or colour image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    f = img.astype(np.float64)
    valid = f[np.isfinite(f) & (f > 0)]
    if valid.size == 0:
        raise ValueError("the image is blank (no positive pixel values)")
    lo, hi = np.percentile(valid, [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((np.nan_to_num(f) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as the detector wants it: 8-bit grey (16-bit IR is stretched)."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read an image at {path}")
    if img.ndim == 3:  # OpenCV reads colour as BGR(A)
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return to_gray8(img)


def detect_charuco(
    image: np.ndarray | str | os.PathLike,
    board: CharucoBoard,
    legacy: bool | None = None,
    label: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The board's inner corners in ``image`` (an array, RGB or grey, 8 or 16 bits, or a file):
    pixel positions (N, 2) float64 and ChArUco ids (N,) int32, sorted by id.

    Corners are interpolated from the detected markers, so they are sub-pixel; if the image
    as given yields fewer than 4, a contrast-equalised copy (CLAHE) is tried, which rescues
    dim or unevenly lit IR images.
    """
    if isinstance(image, str | os.PathLike):
        label = label or str(image)
        gray = read_image(image)
    else:
        gray = to_gray8(image)
    label = label or "the image"
    detector = cv2.aruco.CharucoDetector(board.opencv(legacy))
    corners, ids, _, marker_ids = detector.detectBoard(gray)
    if ids is None or len(ids) < MIN_CORNERS:
        eq = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
        c2, i2, _, m2 = detector.detectBoard(eq)
        if i2 is not None and (ids is None or len(i2) > len(ids)):
            corners, ids, marker_ids = c2, i2, m2
    if ids is None or len(ids) == 0:
        n_markers = 0 if marker_ids is None else len(marker_ids)
        if n_markers == 0:
            raise ValueError(f"no ChArUco corners found in {label}: is the board in view? (no ArUco markers of "
                             f"dictionary {board.dictionary} were seen either)")
        raise ValueError(f"no ChArUco corners found in {label}: {n_markers} markers were seen but none fit a "
                         f"{board.squares_x}x{board.squares_y} board; check its size, dictionary and legacy pattern")
    ids = np.asarray(ids, np.int32).ravel()
    corners = np.asarray(corners, np.float64).reshape(-1, 2)
    order = np.argsort(ids)
    return corners[order], ids[order]


class BoardPose(NamedTuple):
    transform: np.ndarray  # 4x4 board -> camera
    rms_px: float  # reprojection RMS of the corners used


def board_pose(
    corners: np.ndarray,
    ids: np.ndarray,
    board: CharucoBoard,
    K: np.ndarray,
    dist: np.ndarray | None = None,
) -> BoardPose:
    """The board's pose in the camera (4x4 board -> camera, metres) from its detected
    corners, and the reprojection RMS in pixels: the check that the intrinsics, the board
    description and the detection agree (well under a pixel when they do)."""
    corners = np.asarray(corners, np.float64)
    ids = np.asarray(ids).ravel()
    if corners.ndim != 2 or corners.shape[1] != 2 or len(corners) != len(ids):
        raise ValueError(f"corners must be (N, 2) with N ids, got {corners.shape} and {ids.shape}")
    if not np.isfinite(corners).all():
        raise ValueError("corners hold NaN or infinity")
    if len(ids) < MIN_CORNERS:
        raise ValueError(f"{len(ids)} ChArUco corners are too few for a pose (at least {MIN_CORNERS})")
    points = board.corner_points()
    if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= len(points):
        raise ValueError(f"corner ids must be integers in [0, {len(points)}) for this board, "
                         f"got {ids.min()}..{ids.max()}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("corner ids repeat")
    ids = ids.astype(np.int32)
    if board.opencv().checkCharucoCornersCollinear(ids.reshape(-1, 1)):
        raise ValueError("the detected corners lie on one line: the board's pose is ambiguous")
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must be a 3x3 camera matrix with positive focal lengths, got {K.tolist()}")
    dist = np.zeros(0) if dist is None else np.asarray(dist, np.float64).ravel()
    if len(dist) not in (0, 4, 5, 8, 12, 14) or not np.isfinite(dist).all():
        raise ValueError(f"dist must hold 0, 4, 5, 8, 12 or 14 finite coefficients, got {len(dist)}")
    obj = points[ids]
    # SOLVEPNP_ITERATIVE (homography start, then Levenberg-Marquardt) fits these planar
    # boards best (on the Kinect's IR image, a slightly lower RMS than IPPE alone).
    ok, rvec, tvec = cv2.solvePnP(obj, corners, K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no pose for the detected corners")
    projected, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - corners) ** 2, axis=1))))
    transform = np.eye(4)
    transform[:3, :3] = cv2.Rodrigues(rvec)[0]
    transform[:3, 3] = tvec.ravel()
    if transform[2, 3] <= 0:
        raise ValueError(f"the solved board pose lies behind the camera (z = {transform[2, 3]:.3f} m)")
    return BoardPose(transform, rms)


# -- poses ------------------------------------------------------------------------------


def invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact: transpose the rotation)."""
    t = np.asarray(transform, np.float64)
    out = np.eye(4)
    out[:3, :3] = t[:3, :3].T
    out[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return out


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """The angle of a rotation matrix (or a 4x4 transform's rotation), degrees."""
    r = np.asarray(rotation, np.float64)[:3, :3]
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def relative_pose(board_to_target: np.ndarray, board_to_source: np.ndarray) -> np.ndarray:
    """Source camera -> target camera from one board seen by both: x_target = T · x_source.

    With the Azure Kinect's colour camera as target and its IR (depth) camera as source,
    this is the depth-to-colour extrinsic."""
    return np.asarray(board_to_target, np.float64) @ invert(board_to_source)


def poses_in_reference(board_poses: Mapping[str, np.ndarray], reference: str) -> dict[str, np.ndarray]:
    """Each camera's pose (camera -> reference camera) from its board pose; the reference's is identity."""
    if reference not in board_poses:
        raise ValueError(f"reference camera {reference!r} is not among {sorted(board_poses)}")
    ref = board_poses[reference]
    return {name: np.eye(4) if name == reference else relative_pose(ref, t) for name, t in board_poses.items()}


def floor_frame(board: CharucoBoard, board_to_camera: np.ndarray) -> np.ndarray:
    """Board -> participant frame for a board lying face up on the floor where the
    participant will stand: origin at the board's centre, y up (out of the printed face),
    +z horizontal toward the camera that sees the board (the participant faces it)."""
    cam = invert(board_to_camera)[:3, 3] - board.center  # the camera, in board coordinates
    up = np.array([0.0, 0.0, -1.0])
    height = float(cam @ up)
    if height <= 0:
        raise ValueError("the camera is not above the board's printed face: is the board face up on the floor?")
    toward = cam - height * up
    if np.linalg.norm(toward) < 1e-3 * max(height, 1e-9):
        raise ValueError("the camera looks straight down on the board: which way the participant faces is undefined")
    z = toward / np.linalg.norm(toward)
    x = np.cross(up, z)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, up, z])  # rows: the participant's axes in board coordinates
    out[:3, 3] = -out[:3, :3] @ board.center
    return out


def poses_on_floor(board_poses: Mapping[str, np.ndarray], board: CharucoBoard, facing: str) -> dict[str, np.ndarray]:
    """Each camera's pose (camera -> participant frame) with the board on the floor, the
    participant facing camera ``facing`` (see :func:`floor_frame`)."""
    if facing not in board_poses:
        raise ValueError(f"camera {facing!r} is not among {sorted(board_poses)}")
    to_floor = floor_frame(board, board_poses[facing])
    return {name: to_floor @ invert(t) for name, t in board_poses.items()}


# -- ICP --------------------------------------------------------------------------------


class IcpResult(NamedTuple):
    transform: np.ndarray  # refined 4x4 source -> target
    fitness: float  # share of source points with a target point within max_distance
    rmse: float  # RMS distance of those inliers, metres


def _points(points: np.ndarray, what: str) -> np.ndarray:
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{what} must be (N, 3) points, got shape {p.shape}")
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) < 10:
        raise ValueError(f"{what}: {len(p)} finite points are too few for ICP (at least 10)")
    return p


def refine_icp(
    source_points: np.ndarray,
    target_points: np.ndarray,
    init: np.ndarray,
    max_distance: float,
    voxel: float | None = None,
    max_iterations: int = 60,
) -> IcpResult:
    """Point-to-plane ICP (Open3D) from ``init`` (source -> target): the refined transform,
    its fitness and inlier RMSE. Point-to-plane because it converges several times faster
    than point-to-point on the smooth surfaces depth cameras see. ``max_distance`` (metres)
    bounds a correspondence: a little more than the error expected in ``init``.
    ``voxel`` downsamples both clouds first (faster, evens out density)."""
    import open3d as o3d

    if not max_distance > 0:
        raise ValueError(f"max_distance must be > 0 metres, got {max_distance}")
    if voxel is not None and not voxel > 0:
        raise ValueError(f"voxel must be > 0 metres, got {voxel}")
    init = check_pose(init, "init")
    src, dst = (o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_points(p, w)))
                for p, w in ((source_points, "source_points"), (target_points, "target_points")))
    if voxel:
        src, dst = src.voxel_down_sample(voxel), dst.voxel_down_sample(voxel)
    spacing = voxel or float(np.median(np.asarray(dst.compute_nearest_neighbor_distance())))
    dst.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=max(4 * spacing, 0.01), max_nn=30))
    reg = o3d.pipelines.registration
    result = reg.registration_icp(
        src, dst, max_distance, init, reg.TransformationEstimationPointToPlane(),
        reg.ICPConvergenceCriteria(relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=max_iterations))
    if result.fitness == 0:
        raise ValueError(f"ICP found no point pairs within {max_distance} m: do the clouds overlap, and is init "
                         "close enough?")
    return IcpResult(np.asarray(result.transformation, np.float64).copy(), float(result.fitness),
                     float(result.inlier_rmse))


# -- the whole calibration ----------------------------------------------------------------


def calibrate(
    images: Mapping[str, np.ndarray | str | os.PathLike],
    intrinsics: Mapping[str, tuple[np.ndarray, np.ndarray]],
    board: CharucoBoard,
    reference: str,
    clouds: Mapping[str, np.ndarray] | None = None,
    frame: str = "reference",
    icp_max_distance: float = 0.02,
    icp_voxel: float | None = 0.005,
    min_fitness: float = 0.3,
) -> Rig:
    """One shot of a ChArUco board per camera -> the rig of cameras in one frame.

    ``images``: each camera's image of the board (a file or an array); ``intrinsics``: its
    (K, dist); ``reference``: the camera whose frame is the rig's (``frame="reference"``)
    or that the participant faces (``frame="floor"``, board on the floor). ``clouds``, where
    given: each camera's points (N, 3) in its own coordinates, taken at the same time; each
    camera other than the reference is then refined by ICP against the cameras placed before
    it (the reference first, then in the order given). A refinement whose fitness is under
    ``min_fitness`` is not applied (the board pose stands) and a warning says so.
    """
    if frame not in ("reference", "floor"):
        raise ValueError(f"frame must be 'reference' or 'floor', got {frame!r}")
    if reference not in images:
        raise ValueError(f"reference camera {reference!r} has no image; cameras: {sorted(images)}")
    missing = sorted(set(images) - set(intrinsics))
    if missing:
        raise ValueError(f"no intrinsics for camera(s) {missing}")
    grays, sizes = {}, {}
    for name, image in images.items():
        grays[name] = read_image(image) if isinstance(image, str | os.PathLike) else to_gray8(image)
        sizes[name] = grays[name].shape[::-1]

    def solve(legacy: bool | None) -> dict[str, BoardPose]:
        out = {}
        for name, gray in grays.items():
            label = f"camera {name!r}" + (f" ({images[name]})" if isinstance(images[name], str | os.PathLike) else "")
            corners, ids = detect_charuco(gray, board, legacy, label)
            out[name] = board_pose(corners, ids, board, *intrinsics[name])
        return out

    if board.legacy is not None or not board.patterns_differ:
        # A board with an odd number of rows (the Kinect sample's 14x9) prints the same in
        # both patterns, so there is nothing to choose.
        fits = solve(board.legacy)
    else:  # try both patterns; keep the one that fits (lower mean reprojection error)
        tries, errors = {}, {}
        for legacy in (False, True):
            try:
                tries[legacy] = solve(legacy)
            except ValueError as e:
                errors[legacy] = e
        if not tries:
            raise errors[False]
        fits = min(tries.values(), key=lambda f: np.mean([p.rms_px for p in f.values()]))
    board_poses = {name: fit.transform for name, fit in fits.items()}
    if frame == "reference":
        poses = poses_in_reference(board_poses, reference)
    else:
        poses = poses_on_floor(board_poses, board, reference)

    icp: dict[str, dict] = {}
    if clouds:
        unknown = sorted(set(clouds) - set(images))
        if unknown:
            raise ValueError(f"clouds given for camera(s) {unknown} that have no image")
        if reference not in clouds:
            raise ValueError(f"ICP refinement needs the reference camera {reference!r}'s cloud")
        placed = [_points(clouds[reference], f"cloud {reference!r}") @ poses[reference][:3, :3].T
                  + poses[reference][:3, 3]]
        for name in (n for n in clouds if n != reference):
            target = np.concatenate(placed)
            fit = refine_icp(clouds[name], target, poses[name], icp_max_distance, icp_voxel)
            if fit.fitness < min_fitness:
                warnings.warn(f"camera {name!r}: ICP fitness {fit.fitness:.2f} < {min_fitness}: too little overlap "
                              "with the cameras placed before it; keeping its board pose", stacklevel=2)
            else:
                poses[name] = fit.transform
                icp[name] = {"fitness": fit.fitness, "rmse_m": fit.rmse}
            p = _points(clouds[name], f"cloud {name!r}")
            placed.append(p @ poses[name][:3, :3].T + poses[name][:3, 3])

    cameras = [RigCamera(name, poses[name], _intrinsics(intrinsics[name], sizes[name], name), fits[name].rms_px,
                         icp.get(name)) for name in images]
    return Rig(cameras, reference)


def _intrinsics(k_dist: tuple[np.ndarray, np.ndarray], size: tuple[int, int], name: str) -> Intrinsics:
    K = np.asarray(k_dist[0], np.float64)
    dist = np.zeros(0) if k_dist[1] is None else np.asarray(k_dist[1], np.float64).ravel()
    if len(dist) > 8 and np.any(dist[8:] != 0):
        raise ValueError(f"camera {name!r}: the cameras file holds 8 distortion coefficients; this one has "
                         f"{len(dist)} with non-zero thin-prism/tilt terms")
    if abs(K[0, 1]) > 1e-9 * K[0, 0]:
        raise ValueError(f"camera {name!r}: K has skew {K[0, 1]}, which the cameras file cannot hold")
    return Intrinsics(int(size[0]), int(size[1]), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                      tuple(float(c) for c in dist[:8]))
