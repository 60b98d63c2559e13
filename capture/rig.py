"""Several cameras on one participant: the cameras file, and fusing their clouds.

``holoport calibrate`` writes the cameras file; sources read it to place each camera's
points in the participant's frame. It is JSON, so that a person can read and fix it::

    {"format": "holoport-cameras", "version": 1, "reference": "front",
     "cameras": [{"name": "front",
                  "pose": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                  "intrinsics": {"width": 640, "height": 576, "fx": 504.0, "fy": 504.0,
                                 "cx": 319.5, "cy": 287.5, "distortion": [k1, k2, p1, p2, k3, k4, k5, k6]},
                  "reprojection_rms_px": 0.18,
                  "icp": {"fitness": 0.93, "rmse_m": 0.004}}]}

``pose`` is the 4x4 rigid transform, row-major, from the camera's coordinates (OpenCV:
x right, y down, z forward) to the participant's frame, in metres. ``intrinsics``,
``reprojection_rms_px`` (the board fit's residual) and ``icp`` (how well the camera's cloud
met the others') are optional; they are kept so that a bad calibration can be seen.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capture.types import Intrinsics

FORMAT = "holoport-cameras"
VERSION = 1
#: How far from orthonormal a stored rotation may be (files written by hand round numbers).
RIGID_TOLERANCE = 1e-4
#: A translation beyond this is surely millimetres written where metres belong.
MAX_TRANSLATION_M = 50.0
_INTRINSIC_KEYS = ("width", "height", "fx", "fy", "cx", "cy")


class RigError(ValueError):
    """A cameras file or a pose that cannot be used; the message names the field."""


def check_pose(pose, what: str = "pose") -> np.ndarray:
    """``pose`` as a float64 4x4 rigid transform with its rotation re-orthonormalised, or
    :class:`RigError` saying what is wrong (shape, non-finite, not a rotation, mirror, units)."""
    try:
        m = np.array(pose, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise RigError(f"{what}: not a 4x4 matrix of numbers ({e})") from None
    if m.shape != (4, 4):
        raise RigError(f"{what}: must be 4x4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise RigError(f"{what}: holds NaN or infinity")
    if not np.allclose(m[3], (0, 0, 0, 1), atol=1e-9):
        raise RigError(f"{what}: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    r = m[:3, :3]
    off = float(np.abs(r.T @ r - np.eye(3)).max())
    if off > RIGID_TOLERANCE:
        raise RigError(f"{what}: not rigid: the rotation part is off orthonormal by {off:.3g} (scale or shear?)")
    if np.linalg.det(r) < 0:
        raise RigError(f"{what}: not rigid: the rotation part is a mirror (determinant < 0)")
    if np.linalg.norm(m[:3, 3]) > MAX_TRANSLATION_M:
        raise RigError(f"{what}: translation {m[:3, 3].tolist()} is over {MAX_TRANSLATION_M:g} m: "
                       "poses are in metres, not millimetres")
    u, _, vt = np.linalg.svd(r)  # the nearest rotation, so that rounding in the file does not accumulate
    m[:3, :3] = u @ vt
    return m


@dataclass
class RigCamera:
    """One camera of the rig: where it is (camera -> participant) and how well that is known."""

    name: str
    pose: np.ndarray
    intrinsics: Intrinsics | None = None
    reprojection_rms_px: float | None = None
    icp: dict | None = None  # {"fitness": float, "rmse_m": float}

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise RigError(f"camera name must be a non-empty string, got {self.name!r}")
        self.pose = check_pose(self.pose, f"camera {self.name!r} pose")


@dataclass
class Rig:
    """The cameras of one participant, each with its pose in the participant's frame."""

    cameras: list[RigCamera]
    reference: str

    def __post_init__(self) -> None:
        if not self.cameras:
            raise RigError("a rig needs at least one camera")
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RigError(f"camera names must be unique, repeated: {dup}")
        if self.reference not in names:
            raise RigError(f"reference {self.reference!r} is not one of the cameras {names}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def camera(self, name: str) -> RigCamera:
        for c in self.cameras:
            if c.name == name:
                return c
        raise RigError(f"no camera {name!r} in the cameras file; its cameras: {self.names}")

    def pose(self, name: str) -> np.ndarray:
        """Camera ``name`` -> participant frame, 4x4 float64 (a copy)."""
        return self.camera(name).pose.copy()

    def to_dict(self) -> dict:
        cams = []
        for c in self.cameras:
            d: dict = {"name": c.name, "pose": [[float(x) for x in row] for row in c.pose]}
            if c.intrinsics is not None:
                k = c.intrinsics
                d["intrinsics"] = {**k.to_dict(), "distortion": [float(x) for x in k.coefficients]}
            d["reprojection_rms_px"] = None if c.reprojection_rms_px is None else float(c.reprojection_rms_px)
            if c.icp is not None:
                d["icp"] = {"fitness": float(c.icp["fitness"]), "rmse_m": float(c.icp["rmse_m"])}
            cams.append(d)
        return {"format": FORMAT, "version": VERSION, "reference": self.reference, "cameras": cams}

    @classmethod
    def from_dict(cls, d) -> Rig:
        if not isinstance(d, dict):
            raise RigError(f"a cameras file holds a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise RigError(f"format: expected {FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != VERSION:
            raise RigError(f"version: this reader knows version {VERSION}, got {d.get('version')!r}")
        _only(d, {"format", "version", "reference", "cameras"}, "")
        reference = d.get("reference")
        if not isinstance(reference, str):
            raise RigError(f"reference: must be a camera name, got {reference!r}")
        cams = d.get("cameras")
        if not isinstance(cams, list) or not cams:
            raise RigError("cameras: must be a non-empty list")
        return cls([_camera_from_dict(c, f"cameras[{i}]") for i, c in enumerate(cams)], reference)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Rig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no cameras file at {path} (make one with `holoport calibrate`)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RigError(f"{path}: not JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except RigError as e:
            raise RigError(f"{path}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the file whole or not at all (a temporary file, then a rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)


def _only(d: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise RigError(f"{where}: unknown field(s) {unknown}" if where else f"unknown field(s) {unknown}")


def _number(v, where: str, minimum: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise RigError(f"{where}: must be a finite number, got {v!r}")
    if minimum is not None and v < minimum:
        raise RigError(f"{where}: must be >= {minimum:g}, got {v!r}")
    return float(v)


def _camera_from_dict(c, where: str) -> RigCamera:
    if not isinstance(c, dict):
        raise RigError(f"{where}: must be an object, got {type(c).__name__}")
    _only(c, {"name", "pose", "intrinsics", "reprojection_rms_px", "icp"}, where)
    for key in ("name", "pose"):
        if key not in c:
            raise RigError(f"{where}.{key}: missing")
    name = c["name"]
    if not isinstance(name, str) or not name.strip():
        raise RigError(f"{where}.name: must be a non-empty string, got {name!r}")
    where = f"{where} ({name})"
    pose = c["pose"]
    if not (isinstance(pose, list) and len(pose) == 4 and all(isinstance(r, list) and len(r) == 4 for r in pose)):
        raise RigError(f"{where}.pose: must be 4 rows of 4 numbers (row-major), got {pose!r}")
    for r, row in enumerate(pose):
        for k, v in enumerate(row):
            _number(v, f"{where}.pose[{r}][{k}]")
    pose = check_pose(pose, f"{where}.pose")
    intrinsics = None
    if c.get("intrinsics") is not None:
        intrinsics = _intrinsics_from_dict(c["intrinsics"], f"{where}.intrinsics")
    rms = c.get("reprojection_rms_px")
    if rms is not None:
        rms = _number(rms, f"{where}.reprojection_rms_px", 0.0)
    icp = c.get("icp")
    if icp is not None:
        if not isinstance(icp, dict):
            raise RigError(f"{where}.icp: must be an object {{fitness, rmse_m}}, got {icp!r}")
        _only(icp, {"fitness", "rmse_m"}, f"{where}.icp")
        for key in ("fitness", "rmse_m"):
            if key not in icp:
                raise RigError(f"{where}.icp.{key}: missing")
        fitness = _number(icp["fitness"], f"{where}.icp.fitness", 0.0)
        if fitness > 1:
            raise RigError(f"{where}.icp.fitness: must be in [0, 1], got {fitness}")
        icp = {"fitness": fitness, "rmse_m": _number(icp["rmse_m"], f"{where}.icp.rmse_m", 0.0)}
    return RigCamera(name, pose, intrinsics, rms, icp)


def _intrinsics_from_dict(k, where: str) -> Intrinsics:
    if not isinstance(k, dict):
        raise RigError(f"{where}: must be an object, got {type(k).__name__}")
    _only(k, {*_INTRINSIC_KEYS, "distortion", "distortion_model", "max_radius"}, where)
    for key in _INTRINSIC_KEYS:
        if key not in k:
            raise RigError(f"{where}.{key}: missing")
    for key in ("width", "height"):
        if isinstance(k[key], bool) or not isinstance(k[key], int) or k[key] <= 0:
            raise RigError(f"{where}.{key}: must be a positive integer, got {k[key]!r}")
    values = {key: _number(k[key], f"{where}.{key}") for key in ("fx", "fy", "cx", "cy")}
    dist = k.get("distortion", [])
    if not isinstance(dist, list) or len(dist) > 8:
        raise RigError(f"{where}.distortion: must be a list of up to 8 numbers (k1 k2 p1 p2 k3 k4 k5 k6), "
                       f"got {dist!r}")
    dist = [_number(v, f"{where}.distortion[{i}]") for i, v in enumerate(dist)]
    try:
        return Intrinsics(k["width"], k["height"], distortion=tuple(dist), **values,
                          distortion_model=k.get("distortion_model", "brown_conrady"),
                          max_radius=_number(k.get("max_radius", 0.0), f"{where}.max_radius", 0.0))
    except ValueError as e:
        raise RigError(f"{where}: {e}") from None


def fuse(
    clouds: Sequence[tuple[np.ndarray, np.ndarray]],
    poses: Sequence[np.ndarray],
    voxel: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each camera's cloud (positions float32 (N, 3) in its own coordinates, colours uint8
    (N, 3)) moved into the participant's frame by its pose and concatenated.

    Where cameras overlap, a surface is seen twice; ``voxel`` (metres) merges the points
    that share a cell of that size into one (mean position and colour), so the codec does
    not spend bits on duplicates.
    """
    if len(clouds) != len(poses):
        raise ValueError(f"{len(clouds)} clouds but {len(poses)} poses")
    if not clouds:
        raise ValueError("fuse needs at least one cloud")
    out_pos, out_col = [], []
    for i, ((positions, colors), pose) in enumerate(zip(clouds, poses, strict=True)):
        p = np.asarray(positions)
        c = np.asarray(colors)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"cloud {i}: positions must be (N, 3), got {p.shape}")
        if c.shape != p.shape or c.dtype != np.uint8:
            raise ValueError(f"cloud {i}: colors must be uint8 {p.shape}, got {c.dtype} {c.shape}")
        m = check_pose(pose, f"pose {i}")
        out_pos.append((p.astype(np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32))
        out_col.append(c)
    positions, colors = np.concatenate(out_pos), np.concatenate(out_col)
    if voxel is None or len(positions) == 0:
        return positions, colors
    if not voxel > 0:
        raise ValueError(f"voxel must be > 0 metres, got {voxel}")
    return merge_voxels(positions, colors, voxel)


def merge_voxels(positions: np.ndarray, colors: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied ``voxel``-sized cell: the mean position and colour of its points."""
    from capture.cut import voxel_downsample

    return voxel_downsample(positions, colors, voxel)
