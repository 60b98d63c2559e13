"""Azure Kinect ``.mkv`` recordings, read with PyAV: no Kinect SDK (Debian has none), no pyk4a.

A recording made by ``k4arecorder`` is Matroska with a COLOR track (MJPEG, or raw BGRA,
NV12 or YUY2), a DEPTH track (16-bit big-endian millimetres), an IR track, an IMU track and
the device's factory calibration as an attachment, ``calibration.json``. The calibration is
stored for the sensors' full resolution and normalised; the depth and colour modes (track
tags ``K4A_DEPTH_MODE``, ``K4A_COLOR_MODE``) say how the SDK crops and scales it, which is
done here with the SDK's own figures (its ``transformation_get_mode_specific_*``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capture.lens import register
from capture.rgbd_source import RGBDSource
from capture.types import Intrinsics, RGBDFrame

DEPTH_SCALE = 1e-3  # the depth track is in millimetres

# mode -> (binned calibration resolution, crop offset, output resolution), from the SDK
DEPTH_MODES = {
    "NFOV_2X2BINNED": ((512, 512), (96, 90), (320, 288)),
    "NFOV_UNBINNED": ((1024, 1024), (192, 180), (640, 576)),
    "WFOV_2X2BINNED": ((512, 512), (0, 0), (512, 512)),
    "WFOV_UNBINNED": ((1024, 1024), (0, 0), (1024, 1024)),
    "PASSIVE_IR": ((1024, 1024), (0, 0), (1024, 1024)),
}
COLOR_MODES = {  # for a 4:3 sensor calibration (4096x3072)
    "720P": ((1280, 960), (0, 120), (1280, 720)),
    "1080P": ((1920, 1440), (0, 180), (1920, 1080)),
    "1440P": ((2560, 1920), (0, 240), (2560, 1440)),
    "1536P": ((2048, 1536), (0, 0), (2048, 1536)),
    "2160P": ((3840, 2880), (0, 360), (3840, 2160)),
    "3072P": ((4096, 3072), (0, 0), (4096, 3072)),
}
_LENS_MODELS = {"CALIBRATION_LensDistortionModelBrownConrady": "brown_conrady",
                "CALIBRATION_LensDistortionModelRational6KT": "rational_6kt"}


class KinectFileError(ValueError):
    """The file is not an Azure Kinect recording this reader understands."""


def _camera(cameras: list[dict], purpose: str) -> dict:
    for cam in cameras:
        if cam.get("Purpose") == f"CALIBRATION_CameraPurpose{purpose}":
            return cam
    raise KinectFileError(f"calibration has no {purpose} camera")


def _mode_intrinsics(cam: dict, mode: tuple) -> Intrinsics:
    """The SDK's mode-specific calibration: scale the normalised parameters to the binned
    resolution, shift by the crop, and move to pixel-centre-zero coordinates (-0.5)."""
    (bw, bh), (ox, oy), (w, h) = mode
    model = _LENS_MODELS.get(cam["Intrinsics"]["ModelType"])
    if model is None:
        raise KinectFileError(f"unsupported lens model {cam['Intrinsics']['ModelType']}")
    p = [float(x) for x in cam["Intrinsics"]["ModelParameters"]]
    if len(p) < 14:
        raise KinectFileError(f"lens model has {len(p)} parameters, expected 14")
    cx, cy, fx, fy, k1, k2, k3, k4, k5, k6, codx, cody, p2, p1 = p[:14]
    if codx != 0 or cody != 0:
        raise KinectFileError("a centre of distortion other than the principal point is not supported")
    return Intrinsics(w, h, fx * bw, fy * bh, cx * bw - ox - 0.5, cy * bh - oy - 0.5,
                      (k1, k2, p1, p2, k3, k4, k5, k6), model, float(cam.get("MetricRadius", 0.0)))


@dataclass(frozen=True)
class KinectCalibration:
    """One device's calibration for one pair of modes."""

    depth: Intrinsics
    color: Intrinsics | None
    depth_to_color: np.ndarray  # 4x4, metres: x_colour = R·x_depth + t

    @classmethod
    def from_json(cls, text: str | bytes, depth_mode: str, color_mode: str | None) -> KinectCalibration:
        try:
            cameras = json.loads(text)["CalibrationInformation"]["Cameras"]
            depth_cam, color_cam = _camera(cameras, "Depth"), _camera(cameras, "PhotoVideo")
            if depth_mode not in DEPTH_MODES:
                raise KinectFileError(f"unknown depth mode {depth_mode!r}")
            depth = _mode_intrinsics(depth_cam, DEPTH_MODES[depth_mode])
            color = None
            if color_mode is not None:
                res = color_mode.split("_")[-1]
                if res not in COLOR_MODES:
                    raise KinectFileError(f"unknown colour mode {color_mode!r}")
                if color_cam["SensorWidth"] * 3 != color_cam["SensorHeight"] * 4:
                    raise KinectFileError("only 4:3 colour sensor calibrations are supported")
                color = _mode_intrinsics(color_cam, COLOR_MODES[res])
            # each camera's Rt maps the depth camera's frame into its own (the depth camera's is identity)
            pose = {}
            for name, cam in (("depth", depth_cam), ("color", color_cam)):
                m = np.eye(4)
                m[:3, :3] = np.array(cam["Rt"]["Rotation"], np.float64).reshape(3, 3)
                m[:3, 3] = cam["Rt"]["Translation"]
                pose[name] = m
            depth_to_color = pose["color"] @ np.linalg.inv(pose["depth"])
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
            raise KinectFileError(f"not an Azure Kinect calibration: {e!r}") from e
        return cls(depth, color, depth_to_color)


class AzureKinectRecording(RGBDSource):
    """A ``k4arecorder`` file as a source of registered RGB-D frames (colour resampled onto
    the depth image through both lenses), in the depth camera's frame placed by ``pose``.

    ``realtime=False`` reads as fast as it decodes; ``loop`` starts over at the end.
    """

    def __init__(self, path: str | Path, pose: np.ndarray | None = None, realtime: bool = False,
                 loop: bool = False) -> None:
        try:
            import av
        except ImportError as e:  # an extra: the rest of capture works without it
            raise ImportError("reading Azure Kinect recordings needs PyAV: pip install 'holoport[kinect]'") from e
        super().__init__(realtime=realtime, loop=loop)
        self.path = Path(path)
        self.name = self.path.name
        self.pose = np.eye(4) if pose is None else np.asarray(pose, np.float64)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as e:
            raise KinectFileError(f"{self.path}: cannot be read as Matroska ({e})") from e
        tracks = {s.metadata.get("title"): s for s in self._container.streams.video}
        if "DEPTH" not in tracks:
            raise KinectFileError(f"{self.path}: no DEPTH track: not an Azure Kinect recording")
        if "COLOR" not in tracks:
            raise KinectFileError(f"{self.path}: no COLOR track: a point needs a colour (record with colour on)")
        self._depth_stream, self._color_stream = tracks["DEPTH"], tracks["COLOR"]
        if self._depth_stream.average_rate:
            self.fps = float(self._depth_stream.average_rate)  # spaces a loop's restart
        attachments = [a for a in self._container.streams.attachments if a.name == "calibration.json"]
        if not attachments:
            raise KinectFileError(f"{self.path}: no calibration.json attachment")
        self.calibration = KinectCalibration.from_json(
            bytes(attachments[0].data), self._depth_stream.metadata.get("K4A_DEPTH_MODE", ""),
            self._color_stream.metadata.get("K4A_COLOR_MODE"))
        self.intrinsics = self.calibration.depth
        self.serial = self._container.metadata.get("K4A_DEVICE_SERIAL_NUMBER", "")
        self._start_offset = int(self._container.metadata.get("K4A_START_OFFSET_NS", "0")) * 1e-9
        self._captures = self._read_captures()

    def _read_captures(self) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        """(timestamp s, depth, colour image) per capture. A capture's colour and depth
        packets are matched as the SDK does, within half a frame period once the recorded
        depth delay is taken off; depth without a colour (or colour without depth) is skipped:
        a point needs a colour."""
        tolerance = 0.5e6 / self.fps  # microseconds, the tracks' time base
        delay = int(self._container.metadata.get("K4A_DEPTH_DELAY_NS", "0")) / 1000
        depths: list = []
        colors: list = []
        for packet in self._container.demux([self._depth_stream, self._color_stream]):
            if packet.pts is None or packet.size == 0:
                continue
            (depths if packet.stream is self._depth_stream else colors).append(packet)
            while depths and colors:
                gap = (depths[0].pts - delay) - colors[0].pts
                if abs(gap) <= tolerance:
                    yield self._decode(depths.pop(0), colors.pop(0))
                elif gap > 0:
                    colors.pop(0)  # a colour frame whose depth never came
                else:
                    depths.pop(0)  # a depth frame without its colour

    def _decode(self, depth_packet, color_packet) -> tuple[float, np.ndarray, np.ndarray]:
        k = self.intrinsics
        raw = bytes(depth_packet)
        if len(raw) != k.width * k.height * 2:
            raise KinectFileError(f"{self.path}: depth frame of {len(raw)} bytes, expected {k.width}x{k.height}x2")
        depth = np.frombuffer(raw, ">u2").reshape(k.height, k.width).astype(np.uint16)
        frames = self._color_stream.codec_context.decode(color_packet)
        image = frames[0].to_ndarray(format="rgb24") if frames else None
        return float(depth_packet.pts * self._depth_stream.time_base) - self._start_offset, depth, image

    def _next_frame(self) -> RGBDFrame | None:
        cal = self.calibration
        for timestamp, depth, image in self._captures:
            if image is None:
                continue  # a colour packet that did not decode
            color, depth = register(depth, DEPTH_SCALE, cal.depth, image, cal.color, cal.depth_to_color)
            index = self._count
            return RGBDFrame(depth, color, cal.depth, DEPTH_SCALE, self.pose, timestamp, index,
                             {"source": "azure-kinect", "file": self.name, "serial": self.serial})
        return None

    def _rewind(self) -> None:
        self._container.seek(0)
        self._captures = self._read_captures()

    def close(self) -> None:
        self._container.close()
