"""RGB-D image sequences from disk, in the layouts public datasets use.

Each layout knows where its images are, their depth scale, the camera's intrinsics and,
where the dataset has them, the camera poses (camera -> world, applied as the frame's
``camera_pose`` so that every frame's points land in one room):

- ``tum``: ``rgb.txt`` and ``depth.txt`` lists (timestamp, file) associated by time, or a
  ``TUM_color``/``TUM_depth`` pair; depth 1/5000 m; TUM's default intrinsics (fx = fy =
  525, cx 319.5, cy 239.5); no poses (TUM's ground truth is not read yet).
- ``redwood``: ``color/N.jpg``, ``depth/N.png``; depth 1/1000 m; ``camera_primesense.json``
  (Open3D's intrinsic JSON, column-major); poses from ``trajectory.log`` (camera -> world).
- ``slambook``: ``color/N.png``, ``depth/N.pgm``; depth 1/1000 m; fx 518, fy 519, cx 325.5,
  cy 253.5; poses from ``pose.txt``, ``tx ty tz qx qy qz qw`` (camera -> world).

Colour images in these datasets are already registered to depth.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from capture.rgbd_source import RGBDSource
from capture.types import Intrinsics, RGBDFrame

TUM_INTRINSICS = Intrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
SLAMBOOK_INTRINSICS = Intrinsics(640, 480, 518.0, 519.0, 325.5, 253.5)
LAYOUTS = ("tum", "redwood", "slambook")


def quaternion_pose(tx: float, ty: float, tz: float, qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """The 4x4 transform of a translation and a unit quaternion (x, y, z, w)."""
    q = np.array([qx, qy, qz, qw], np.float64)
    n = np.linalg.norm(q)
    if not 0.5 < n < 1.5:
        raise ValueError(f"not a unit quaternion: {q}")
    x, y, z, w = q / n
    pose = np.eye(4)
    pose[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    pose[:3, 3] = tx, ty, tz
    return pose


def _numbered(folder: Path, suffix: str) -> list[Path]:
    files = [p for p in folder.glob(f"*{suffix}") if p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


class ImageSequence(RGBDSource):
    """A folder of RGB-D images as a source: ``read()`` in order (``realtime``, ``loop``),
    or any frame by number with ``frame(i)``."""

    def __init__(self, folder: str | Path, layout: str | None = None, fps: float = 30.0, realtime: bool = False,
                 loop: bool = False) -> None:
        super().__init__(realtime=realtime, loop=loop)
        self._cursor = 0
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no RGB-D sequence folder at {self.folder}")
        self.layout = layout or detect_layout(self.folder)
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}: one of {', '.join(LAYOUTS)}")
        self.fps = fps
        self.name = f"{self.folder.name} ({self.layout})"
        self.poses: list[np.ndarray] | None = None
        getattr(self, f"_open_{self.layout}")()
        if not self.pairs:
            raise ValueError(f"{self.folder}: no {self.layout} RGB-D pairs found")
        if self.poses is not None and len(self.poses) < len(self.pairs):
            raise ValueError(f"{self.folder}: {len(self.pairs)} frames but {len(self.poses)} poses")

    def _open_tum(self) -> None:
        self.intrinsics, self.depth_scale = TUM_INTRINSICS, 1 / 5000
        rgb, depth = self.folder / "rgb.txt", self.folder / "depth.txt"
        if rgb.is_file() and depth.is_file():  # the dataset's lists, associated by time
            colors, depths = _tum_list(rgb), _tum_list(depth)
            stamps = np.array([t for t, _ in depths])
            self.pairs, self.times = [], []
            for t, c in colors:
                j = int(np.argmin(np.abs(stamps - t)))
                if abs(stamps[j] - t) < 0.02:
                    self.pairs.append((self.folder / c, self.folder / depths[j][1]))
                    self.times.append(t)
        else:
            self.pairs = [(c, d) for c in sorted(self.folder.glob("TUM_color.*"))
                          for d in sorted(self.folder.glob("TUM_depth.*"))][:1]
            self.times = [0.0] * len(self.pairs)

    def _open_redwood(self) -> None:
        spec = json.loads((self.folder / "camera_primesense.json").read_text())
        m = np.array(spec["intrinsic_matrix"], np.float64).reshape(3, 3).T  # stored column-major
        self.intrinsics = Intrinsics(int(spec["width"]), int(spec["height"]), m[0, 0], m[1, 1], m[0, 2], m[1, 2])
        self.depth_scale = 1 / 1000
        self.pairs = list(zip(_numbered(self.folder / "color", ".jpg"), _numbered(self.folder / "depth", ".png"),
                              strict=False))
        self.times = [i / self.fps for i in range(len(self.pairs))]
        log = self.folder / "trajectory.log"
        if log.is_file():
            rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
            self.poses = [np.array(rows[k + 1:k + 5], np.float64) for k in range(0, len(rows) - 4, 5)]

    def _open_slambook(self) -> None:
        self.intrinsics, self.depth_scale = SLAMBOOK_INTRINSICS, 1 / 1000
        self.pairs = list(zip(_numbered(self.folder / "color", ".png"), _numbered(self.folder / "depth", ".pgm"),
                              strict=False))
        self.times = [i / self.fps for i in range(len(self.pairs))]
        poses = self.folder / "pose.txt"
        if poses.is_file():
            self.poses = [quaternion_pose(*map(float, line.split()))
                          for line in poses.read_text().splitlines() if line.strip()]

    def __len__(self) -> int:
        return len(self.pairs)

    def frame(self, i: int) -> RGBDFrame:
        color_path, depth_path = self.pairs[i]
        depth = iio.imread(depth_path)
        if depth.ndim != 2 or depth.dtype.kind not in "iu" or depth.min() < 0 or depth.max() > 65535:
            raise ValueError(f"{depth_path}: not a 16-bit depth image")
        color = iio.imread(color_path)
        if color.ndim == 3 and color.shape[2] == 4:
            color = color[..., :3]
        k = self.intrinsics
        if depth.shape != (k.height, k.width) or color.shape != (k.height, k.width, 3):
            raise ValueError(f"{color_path.name}/{depth_path.name}: images of {color.shape} and "
                             f"{depth.shape}, intrinsics for {k.width}x{k.height}")
        pose = self.poses[i] if self.poses is not None else np.eye(4)
        return RGBDFrame(depth.astype(np.uint16), np.ascontiguousarray(color, np.uint8), k, self.depth_scale,
                         pose, self.times[i], i, {"layout": self.layout, "file": depth_path.name})

    def _next_frame(self) -> RGBDFrame | None:
        if self._cursor >= len(self):
            return None
        self._cursor += 1
        return self.frame(self._cursor - 1)

    def _rewind(self) -> None:
        self._cursor = 0


def _tum_list(path: Path) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            t, name = line.split()[:2]
            out.append((float(t), name))
    return out


def detect_layout(folder: Path) -> str:
    if (folder / "pose.txt").is_file() and (folder / "depth").is_dir():
        return "slambook"
    if (folder / "camera_primesense.json").is_file():
        return "redwood"
    if (folder / "rgb.txt").is_file() or any(folder.glob("TUM_depth.*")):
        return "tum"
    raise ValueError(f"{folder}: not a TUM, Redwood or slambook layout; pass the layout")
