"""The person, not the room: cut a participant's points out of everything the camera saw.

Four steps, each optional, in the order that keeps them cheap and right:

1. **crop**: a depth range along the camera's optical axis and/or a box. Depth goes first
   because in a real room the dominant plane is often the back wall, not the floor.
2. **floor**: RANSAC for the plane with the most inliers among those that can be a floor:
   normal within ``floor_max_angle`` of ``up`` (a wall is never taken for the floor),
   almost nothing under it (a desk or a slice through the torso has plenty), and, when
   the camera is known, at least ``floor_below_camera`` under the camera. Triples come
   from one 0.5 m cell at a time (a floor holding a tenth of the points is then found
   reliably), candidates are scored on a subsample and refitted by least squares, and
   the points near the plane (and under it) go. No plane that qualifies removes nothing:
   a head-and-shoulders shot has no floor.
3. **outliers**: on a voxel grid, points whose 27-voxel neighbourhood holds too few points
   ("radius"), or fewer than the mean minus ``outlier_std_ratio`` standard deviations
   ("statistical", never below ``outlier_min_points``): flying pixels and speckle.
4. **cluster**: 26-connected components of a voxel grid; keep the one with the most
   points, or the one with the most among those with a point within ``cluster_within``
   of ``cluster_near`` (the camera when not given). With equal voxel sizes (the default)
   steps 3 and 4 share one grid.

Everything heavy runs in numba kernels (``capture._cut_kernels``) without a KD-tree:
voxel steps are a radix sort plus linear sweeps, so a frame's worth of points takes
milliseconds where Open3D's voxelize + RANSAC + DBSCAN takes hundreds (docs/capture.md,
``python -m benchmarks.cut_time --open3d``).
Deterministic for a given ``seed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from capture import _cut_kernels as k
from capture.types import CropBox

OUTLIER_MODES = ("radius", "statistical")

#: Edge of the cells whose points RANSAC draws its triples from. Three points drawn from the
#: whole scene all lie on a floor that holds a tenth of them once in a thousand draws; from
#: one 0.5 m cell, mostly, so a thousand draws find the floor reliably.
SAMPLING_CELL = 0.5
#: Least-squares refits of the RANSAC plane (it settles within a millimetre in three), on
#: this many points at most: plenty for three parameters, and cheap.
REFITS = 3
REFIT_SAMPLE = 16384
#: A point counts as under a candidate floor when it is this many floor_thresholds under
#: it: a three-point plane tilts a little, and far floor points are noisy.
BELOW_MARGIN = 3.0


def _vector(name: str, value, unit: bool = False) -> tuple[float, float, float]:
    try:
        v = tuple(float(c) for c in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers, got {value!r}") from None
    if len(v) != 3 or not all(math.isfinite(c) for c in v):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    if unit:
        norm = math.sqrt(sum(c * c for c in v))
        if norm < 1e-9:
            raise ValueError(f"{name} must not be the zero vector")
        v = tuple(c / norm for c in v)
    return v


def _number(name: str, value, low: float, *, strict: bool = True, high: float | None = None,
            integer: bool = False) -> None:
    """Raise a ValueError naming the option unless ``value`` lies above ``low`` (or at it
    when not ``strict``) and, given ``high``, at or below ``high``."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if value < low or (strict and value == low) or (high is not None and value > high):
        bound = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _local_triples(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` triples of indices into ``points``: an anchor drawn at random and two more
    drawn from the points in its SAMPLING_CELL-sized cell (NAPSAC-style local sampling)."""
    cells = np.floor((points - points.min(axis=0)) / SAMPLING_CELL).astype(np.int64)
    key = (cells[:, 0] * (cells[:, 1].max() + 1) + cells[:, 1]) * (cells[:, 2].max() + 1) + cells[:, 2]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.searchsorted(sorted_key, sorted_key, side="left")
    length = np.searchsorted(sorted_key, sorted_key, side="right") - first
    anchor = rng.integers(0, len(points), count)  # a position in ``order``
    start, size = first[anchor], length[anchor]
    others = start[:, None] + (rng.random((count, 2)) * size[:, None]).astype(np.int64)
    return order[np.column_stack([anchor, others])]


@dataclass(frozen=True, eq=False)
class CutReport:
    """What one ``PersonCut.apply`` found, returned with the points (as Open3D's
    ``segment_plane`` returns its plane with the inliers), so one ``PersonCut`` can serve
    several cameras and threads at once.

    ``plane``: the floor (nx, ny, nz, d), with n . p + d the height of p above it; None when
    no plane qualified (or the floor step is off). ``stats``: the points in (``input``) and
    left after each step that ran (``crop``, ``floor``, ``outliers``, ``cluster``), the
    outlier threshold used (``outlier_threshold``), the chosen cluster's points
    (``cluster_points``) and its nearest point's distance to the reference
    (``cluster_distance``). ``timings``: milliseconds per step that ran and in ``total``.
    """

    plane: np.ndarray | None
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PersonCut:
    """Options of the person cut; ``apply`` runs it. Validated on construction (ValueError).

    Coordinates are metres in the points' own frame: by default the participant's frame
    (y up, origin on the floor; see ``capture``). ``camera`` and ``forward`` (the camera's
    centre and optical axis in that frame) are unknown unless given; ``for_camera`` takes
    them from a pose. ``depth_range`` needs them, and so does ``cluster_within`` without
    ``cluster_near``. For points in OpenCV camera coordinates use
    ``PersonCut.for_camera(np.eye(4), up=(0, -1, 0), ...)``.

    ``apply`` keeps no state: what it found (the floor plane, points per step, timings)
    comes back with the points as a ``CutReport``.
    """

    camera: tuple[float, float, float] | None = None
    forward: tuple[float, float, float] | None = None
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    # 1. crop (both off by default: rgbd_to_points already crops with its box)
    depth_range: tuple[float, float] | None = None  # metres along forward from camera
    box: CropBox | None = None
    # 2. floor plane
    floor: bool = True
    floor_threshold: float = 0.02  # RANSAC and refit inlier band, metres
    floor_distance: float = 0.03  # points this close to the plane are removed
    floor_below: bool = True  # and everything under it
    floor_max_angle: float = 20.0  # degrees between the plane's normal and up
    floor_min_fraction: float = 0.05  # of the subsample on the plane, or it is no floor
    floor_max_below: float = 0.05  # of the subsample 3 floor_thresholds under it, or it is no floor
    floor_below_camera: float = 0.5  # metres the floor lies under the camera at least (if known)
    floor_iterations: int = 1000  # RANSAC draws at most (it stops early on a well-supported plane)
    floor_sample: int = 2048  # points that score each candidate plane
    # 3. outliers
    outliers: str | None = "radius"  # "radius", "statistical" or None
    outlier_voxel: float = 0.025
    outlier_min_points: int = 8  # in the 27-voxel neighbourhood, the point itself included
    outlier_std_ratio: float = 2.0  # "statistical" only
    # 4. the person's cluster
    cluster: bool = True
    cluster_voxel: float = 0.025
    cluster_within: float | None = None  # metres from cluster_near; None: the largest anywhere
    cluster_near: tuple[float, float, float] | None = None  # None: the camera
    seed: int = 0

    def __post_init__(self) -> None:
        put = object.__setattr__
        if (self.camera is None) != (self.forward is None):
            raise ValueError("give both camera and forward, or neither")
        if self.camera is not None:
            put(self, "camera", _vector("camera", self.camera))
            put(self, "forward", _vector("forward", self.forward, unit=True))
        put(self, "up", _vector("up", self.up, unit=True))
        if self.depth_range is not None:
            try:
                near, far = (float(v) for v in self.depth_range)
            except (TypeError, ValueError):
                raise ValueError(f"depth_range must be (near, far) or None, got {self.depth_range!r}") from None
            if not near < far:
                raise ValueError(f"depth_range must have near < far, got {self.depth_range!r}")
            if self.camera is None:
                raise ValueError("depth_range is measured from the camera: give camera and forward (or use for_camera)")
            put(self, "depth_range", (near, far))
        if self.box is not None:
            if not isinstance(self.box, CropBox):
                raise ValueError(f"box must be a CropBox or None, got {self.box!r}")
            lo, hi = _vector("box.min", self.box.min), _vector("box.max", self.box.max)
            if not all(a < b for a, b in zip(lo, hi, strict=True)):
                raise ValueError(f"box must have min < max on every axis, got {self.box!r}")
        _number("floor_threshold", self.floor_threshold, 0)
        _number("floor_distance", self.floor_distance, 0)
        _number("floor_max_angle", self.floor_max_angle, 0)
        if self.floor_max_angle >= 90:
            raise ValueError(f"floor_max_angle must be < 90 degrees, got {self.floor_max_angle!r}")
        _number("floor_min_fraction", self.floor_min_fraction, 0, strict=False, high=1)
        _number("floor_max_below", self.floor_max_below, 0, strict=False, high=1)
        _number("floor_below_camera", self.floor_below_camera, 0, strict=False)
        _number("floor_iterations", self.floor_iterations, 1, strict=False, integer=True)
        _number("floor_sample", self.floor_sample, 3, strict=False, integer=True)
        if self.outliers not in (None, *OUTLIER_MODES):
            raise ValueError(f"outliers must be one of {OUTLIER_MODES} or None, got {self.outliers!r}")
        _number("outlier_voxel", self.outlier_voxel, 0)
        _number("outlier_min_points", self.outlier_min_points, 1, strict=False, integer=True)
        _number("outlier_std_ratio", self.outlier_std_ratio, 0, strict=False)
        _number("cluster_voxel", self.cluster_voxel, 0)
        if self.cluster_near is not None:
            put(self, "cluster_near", _vector("cluster_near", self.cluster_near))
        if self.cluster_within is not None:
            _number("cluster_within", self.cluster_within, 0)
            if self.cluster_near is None and self.camera is None:
                raise ValueError("cluster_within needs cluster_near or the camera (camera and forward, or for_camera)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    @classmethod
    def for_camera(cls, pose, **options) -> PersonCut:
        """Options for points in a frame where the camera sits at ``pose`` (4x4 camera-to-frame,
        OpenCV axes, e.g. ``RGBDFrame.camera_pose``): the depth range runs along its optical
        axis, the floor lies under it and "near the camera" is measured from its centre."""
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"pose must be a finite 4x4 matrix, got shape {pose.shape}")
        return cls(camera=tuple(pose[:3, 3]), forward=tuple(pose[:3, 2]), **options)

    def apply(self, positions: np.ndarray,
              colors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, CutReport]:
        """The person's points: float32 (M, 3) positions and their uint8 (M, 3) colours (None
        if none were given), in the input's order, and what the cut found (``CutReport``: the
        floor plane, points per step, timings). Non-finite points are always dropped."""
        positions = np.asarray(positions)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must be (N, 3), got {positions.shape}")
        if colors is not None:
            colors = np.asarray(colors)
            if colors.shape != positions.shape or colors.dtype != np.uint8:
                raise ValueError(f"colors must be uint8 {positions.shape}, got {colors.dtype} {colors.shape}")
        pos = np.ascontiguousarray(positions, dtype=np.float32)  # one type: one compiled kernel
        timings: dict[str, float] = {}
        stats: dict = {"input": pos.shape[0]}
        plane = None
        t_start = t = time.perf_counter()

        def lap(step: str, kept: int) -> None:
            nonlocal t
            now = time.perf_counter()
            timings[step] = (now - t) * 1e3
            stats[step] = int(kept)
            t = now

        camera = np.array(self.camera if self.camera is not None else (0.0, 0.0, 0.0))
        forward = np.array(self.forward if self.forward is not None else (0.0, 0.0, 1.0))
        near, far = self.depth_range if self.depth_range is not None else (-np.inf, np.inf)
        box_lo = np.array(self.box.min if self.box else (-np.inf,) * 3, np.float64)
        box_hi = np.array(self.box.max if self.box else (np.inf,) * 3, np.float64)
        idx, lo, hi = k.crop(pos, camera, forward, near, far, box_lo, box_hi)
        bounds = lo, hi  # of the points after the crop: the voxel grids' extent
        lap("crop", idx.shape[0])
        if self.floor:
            idx, plane = self._floor(pos, idx)
            lap("floor", idx.shape[0])
        grid = None  # the outlier step's voxel grid, when the cluster step can reuse it
        if self.outliers is not None and idx.size:
            keys, starts, vox, sx, sy, origin = self._voxelize(pos, idx, bounds, self.outlier_voxel, "outlier_voxel")
            statistical = self.outliers == "statistical"  # needs every count exact
            counts = k.neighbour_counts(keys, starts, sx, sy, 0 if statistical else int(self.outlier_min_points))
            ratio = float(self.outlier_std_ratio) if statistical else -1.0
            keep, threshold = k.outlier_voxels(starts, counts, int(self.outlier_min_points), ratio)
            stats["outlier_threshold"] = float(threshold)
            if self.cluster and self.cluster_voxel == self.outlier_voxel:
                grid = idx, keys, starts, vox, sx, sy, origin, keep  # points are selected once, at the end
                lap("outliers", np.diff(starts)[keep].sum())
            else:
                idx = k.select(idx, vox, keep)
                lap("outliers", idx.shape[0])
        if self.cluster and idx.size:
            idx, stats["cluster_points"], stats["cluster_distance"] = self._cluster(pos, idx, bounds, grid)
            lap("cluster", idx.shape[0])
        out_pos = pos[idx]
        out_col = colors[idx] if colors is not None else None
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return out_pos, out_col, CutReport(plane, stats, timings)

    def _floor(self, pos: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """RANSAC on a subsample in random order, least-squares refits, then the cut: the
        points kept and the floor plane (None when no plane qualifies: nothing is cut)."""
        n = idx.shape[0]
        if n < 3:
            return idx, None
        rng = np.random.default_rng(self.seed)
        sample = rng.permutation(idx) if n <= self.floor_sample else idx[rng.integers(0, n, self.floor_sample)]
        triples = _local_triples(pos[sample], self.floor_iterations, rng)
        up = np.array(self.up)
        cos_max = math.cos(math.radians(self.floor_max_angle))
        threshold = float(self.floor_threshold)
        camera = np.array(self.camera if self.camera is not None else (0.0, 0.0, 0.0))
        min_drop = float(self.floor_below_camera) if self.camera is not None else -np.inf
        plane, support = k.ransac_plane(pos, sample, triples, up, cos_max, threshold, BELOW_MARGIN * threshold,
                                        int(self.floor_max_below * sample.shape[0]), camera, min_drop)
        if support < 3 or support < self.floor_min_fraction * sample.shape[0]:
            return idx, None
        refit = idx if n <= REFIT_SAMPLE else idx[rng.integers(0, n, REFIT_SAMPLE)]
        for _ in range(REFITS):  # least squares on the plane's inliers, which then move a little
            count, total, outer = k.plane_moments(pos, refit, plane, threshold)
            if count < 3:
                break
            centre = total / count
            _, vectors = np.linalg.eigh(outer / count - np.outer(centre, centre))
            normal = vectors[:, 0] if vectors[:, 0] @ up >= 0 else -vectors[:, 0]
            if normal @ up < cos_max or normal @ camera - normal @ centre < min_drop:
                break  # a refit that leaves what a floor may be keeps the plane it had
            plane = np.array([*normal, -(normal @ centre)])
        return k.plane_cut(pos, idx, plane, float(self.floor_distance), bool(self.floor_below)), plane

    @staticmethod
    def _voxelize(pos: np.ndarray, idx: np.ndarray, bounds: tuple, voxel: float, name: str) -> tuple:
        keys, starts, vox, sx, sy, origin, ok = k.voxelize(pos, idx, float(voxel), *bounds)
        if not ok:
            raise ValueError(f"the points span too large a volume for {name}={voxel}: crop them first")
        return keys, starts, vox, sx, sy, origin

    def _cluster(self, pos: np.ndarray, idx: np.ndarray, bounds: tuple,
                 grid: tuple | None) -> tuple[np.ndarray, int, float]:
        """The chosen 26-connected component's points, its size and its nearest point's
        distance to the reference; ``grid`` is the outlier step's voxel grid (with the points
        it was built on and the voxels it kept) when it can be reused."""
        if grid is None:
            keys, starts, vox, sx, sy, origin = self._voxelize(pos, idx, bounds, self.cluster_voxel, "cluster_voxel")
            active = np.ones(keys.shape[0], np.bool_)
        else:
            idx, keys, starts, vox, sx, sy, origin, active = grid
        labels = k.components(keys, sx, sy, active)
        within = np.inf if self.cluster_within is None else float(self.cluster_within)
        near = self.cluster_near if self.cluster_near is not None else self.camera
        ref = np.array(near if near is not None else (0.0, 0.0, 0.0))
        label, size, distance = k.pick_component(
            pos, idx, vox, keys, starts, labels, sx, sy, origin, float(self.cluster_voxel), ref, within)
        if label < 0:  # nobody near enough
            return idx[:0], int(size), float(distance)
        return k.select(idx, vox, labels == label), int(size), float(distance)


def voxel_downsample(positions: np.ndarray, colors: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied ``voxel``-sized cell: the mean position and colour of its
    points. Where cameras overlap, or a camera samples a surface more finely than the codec
    keeps, this is where the duplicates go."""
    _number("voxel", voxel, 0.0)
    pos = np.ascontiguousarray(positions, np.float32)
    col = np.ascontiguousarray(colors, np.uint8)
    if pos.ndim != 2 or pos.shape[1] != 3 or col.shape != pos.shape:
        raise ValueError(f"positions (N, 3) and colours (N, 3) uint8, got {pos.shape} and {col.shape}")
    idx, lo, hi = k.crop(pos, np.zeros(3), np.zeros(3), -np.inf, np.inf, np.full(3, -np.inf), np.full(3, np.inf))
    if len(idx) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    keys, _, vox, *_ = PersonCut._voxelize(pos, idx, (lo, hi), voxel, "voxel")
    return k.voxel_means(pos, col, idx, vox, keys.shape[0])
