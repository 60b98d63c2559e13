"""A synthetic RGB-D camera filming a synthetic moving person: the built-in default source.

It exists so that the whole pipeline runs, for real, with no camera: the camera renders
depth and colour images of a capsule-body person (its own height, build, clothing colours
and arm motion) standing on a floor in front of a wall, with depth noise that grows with
distance as a time-of-flight sensor's does. Everything downstream (back-projection, crop,
codec, network, renderer) then sees ordinary RGB-D frames.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from capture._synthetic_kernels import raycast_scene
from capture.geometry import look_at_pose
from capture.rgbd_source import RGBDSource
from capture.types import Intrinsics, RGBDFrame

#: An Azure Kinect-like narrow field of view depth camera (640x576, ~65 deg vertical).
DEFAULT_INTRINSICS = Intrinsics(width=640, height=576, fx=504.0, fy=504.0, cx=319.5, cy=287.5)
DEPTH_SCALE = 0.001  # uint16 millimetres, as Kinect and RealSense deliver
WALL_Z = -1.4  # a wall behind the person, outside the default crop box


@dataclass(frozen=True)
class BodyShape:
    """What makes one synthetic participant look and move unlike another."""

    height: float = 1.75
    build: float = 1.0  # girth multiplier
    shirt: tuple[int, int, int] = (40, 90, 200)
    trousers: tuple[int, int, int] = (50, 50, 60)
    skin: tuple[int, int, int] = (224, 172, 140)
    hair: tuple[int, int, int] = (60, 40, 25)
    stripes: bool = False
    arm_rate: float = 0.5  # arm cycles per second
    phase: float = 0.0

    @classmethod
    def preset(cls, index: int) -> BodyShape:
        """Distinct, repeatable participants for demos and tests."""
        presets = [
            cls(1.78, 1.00, (40, 90, 200), (45, 45, 55), (224, 172, 140), (60, 40, 25), False, 0.45, 0.0),
            cls(1.62, 0.85, (210, 60, 50), (40, 60, 110), (190, 140, 100), (20, 15, 10), True, 0.6, 1.3),
            cls(1.88, 1.25, (60, 160, 80), (110, 90, 70), (140, 95, 65), (90, 90, 90), False, 0.35, 2.6),
            cls(1.70, 1.10, (240, 200, 60), (30, 30, 30), (235, 195, 165), (150, 90, 40), True, 0.5, 3.9),
        ]
        base = presets[index % len(presets)]
        if index < len(presets):
            return base
        rng = np.random.default_rng(index)  # beyond the presets: seeded variations
        return cls(
            height=float(rng.uniform(1.55, 1.92)), build=float(rng.uniform(0.8, 1.3)),
            shirt=tuple(int(c) for c in rng.integers(30, 240, 3)), trousers=base.trousers,
            skin=base.skin, hair=base.hair, stripes=bool(rng.integers(0, 2)),
            arm_rate=float(rng.uniform(0.3, 0.7)), phase=float(rng.uniform(0, 6.28)),
        )

    def capsules(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The body at time ``t`` seconds: capsules (K, 7) as a, b, radius; colours; stripes."""
        h, g = self.height, self.build
        s = h / 1.75
        w = 2 * math.pi * self.arm_rate
        sway = 0.03 * math.sin(0.5 * w * t + self.phase)
        hip_y, shoulder_y, knee_y, ankle_y = 0.53 * h, 0.815 * h, 0.285 * h, 0.045 * h
        head_y, head_r = 0.925 * h, 0.068 * h
        caps, cols, stripes = [], [], []

        def add(a, b, r, color, striped=False):
            caps.append((a[0] + sway, a[1], a[2], b[0] + sway, b[1], b[2], r))
            cols.append(color)
            stripes.append(striped)

        # torso: two side-by-side capsules give a wider-than-deep chest
        for x in (-0.055 * g * s, 0.055 * g * s):
            add((x, hip_y + 0.03, 0.0), (x, shoulder_y - 0.05, 0.0), 0.11 * g * s, self.shirt, self.stripes)
        add((0, shoulder_y - 0.04, 0), (0, head_y - head_r, 0), 0.045 * s, self.skin)  # neck
        add((0, head_y, 0.005), (0, head_y, 0.005), head_r, self.skin)  # head
        add((0, head_y + 0.02 * s, -0.012), (0, head_y + 0.02 * s, -0.012), head_r * 0.97, self.hair)
        for side in (-1.0, 1.0):
            hip = (side * 0.09 * g * s, hip_y, 0.0)
            knee = (side * 0.10 * g * s, knee_y, 0.01)
            ankle = (side * 0.10 * g * s, ankle_y, 0.0)
            add(hip, knee, 0.075 * g * s, self.trousers)
            add(knee, ankle, 0.055 * g * s, self.trousers)
            add(ankle, (ankle[0], ankle_y * 0.6, 0.13 * s), 0.04 * s, (35, 35, 35))
            # arms: raise sideways (abduction) and swing forward, elbow bends
            ph = self.phase + (0.0 if side > 0 else 1.7)
            abduct = 0.15 + 0.75 * (0.5 + 0.5 * math.sin(w * t + ph))
            swing = 0.45 * math.sin(0.7 * w * t + ph)
            bend = 0.25 + 0.9 * (0.5 + 0.5 * math.sin(w * t + ph + 0.8))
            shoulder = (side * (0.17 * g * s + 0.02), shoulder_y - 0.03, 0.0)
            upper = _arm_dir(side * abduct, swing)
            elbow = tuple(shoulder[i] + 0.29 * s * upper[i] for i in range(3))
            fore = _arm_dir(side * abduct * 0.6, swing + bend)
            wrist = tuple(elbow[i] + 0.26 * s * fore[i] for i in range(3))
            add(shoulder, elbow, 0.05 * g * s, self.shirt, self.stripes)
            add(elbow, wrist, 0.04 * s, self.skin)
            add(wrist, wrist, 0.048 * s, self.skin)  # hand
        return (np.array(caps, dtype=np.float64), np.array(cols, dtype=np.float64),
                np.array(stripes, dtype=np.bool_))


def _arm_dir(abduct: float, swing: float) -> tuple[float, float, float]:
    """Unit direction of a limb hanging down, rotated outward (about z) then forward (about x)."""
    x, y = math.sin(abduct), -math.cos(abduct)
    return (x, y * math.cos(swing), -y * math.sin(swing))


class SyntheticCamera(RGBDSource):
    """A depth camera on a tripod in front of a synthetic person; yields :class:`RGBDFrame`.

    ``read(t)`` renders the scene at time ``t`` (seconds since the camera started when
    omitted). Frames are deterministic for a given body, time and ``seed``. A live camera:
    it never ends, and ``read()`` does not wait for the next frame time.
    """

    def __init__(
        self,
        body: BodyShape | None = None,
        intrinsics: Intrinsics = DEFAULT_INTRINSICS,
        camera_position: tuple[float, float, float] = (0.0, 1.25, 2.3),
        look_at: tuple[float, float, float] = (0.0, 1.0, 0.0),
        noise: float = 0.0006,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.name = "synthetic"
        self.body = body or BodyShape()
        self.intrinsics = intrinsics
        self.noise = noise
        self.seed = seed
        self.pose = look_at_pose(camera_position, look_at)
        self._world_to_cam = np.linalg.inv(self.pose)
        k = intrinsics
        u, v = np.meshgrid(np.arange(k.width), np.arange(k.height))
        cam_dirs = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u, float)], -1)
        norm = np.linalg.norm(cam_dirs, axis=-1)
        self._rays = np.ascontiguousarray((cam_dirs / norm[..., None]) @ self.pose[:3, :3].T)
        self._depth_factor = 1.0 / norm  # distance along the ray -> depth along the axis
        self._start = time.monotonic()
        self._index = 0

    def read(self, t: float | None = None) -> RGBDFrame:
        if t is None:
            t = time.monotonic() - self._start
        k = self.intrinsics
        caps, cols, stripes = self.body.capsules(t)
        depth_m = np.empty((k.height, k.width), dtype=np.float32)
        color = np.empty((k.height, k.width, 3), dtype=np.uint8)
        light = np.array([0.3, 0.6, 0.75]) / np.linalg.norm([0.3, 0.6, 0.75])
        raycast_scene(
            caps, cols, stripes, self._rays, self._depth_factor, self.pose[:3, 3],
            self._world_to_cam, k.fx, k.fy, k.cx, k.cy, np.array([150.0, 150.0, 145.0]), WALL_Z,
            np.array([205.0, 195.0, 175.0]), light, 5.5, depth_m, color,
        )
        if self.noise > 0:  # time-of-flight noise grows with the square of the depth
            rng = np.random.default_rng((self.seed, self._index))
            depth_m += (rng.standard_normal(depth_m.shape, dtype=np.float32)
                        * np.float32(self.noise) * depth_m * depth_m)
        depth = np.clip(np.rint(depth_m / DEPTH_SCALE), 0, 65535).astype(np.uint16)
        frame = RGBDFrame(depth, color, k, DEPTH_SCALE, self.pose, t, self._index)
        self._index += 1
        return frame
