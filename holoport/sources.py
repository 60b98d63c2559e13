"""Where a participant's points come from: the synthetic camera, a Holoport recording, an
Azure Kinect recording, or an RGB-D image sequence.

``open_points(spec)`` takes what ``holoport join --source`` and ``holoport record --source``
take: ``synthetic`` (the built-in person), the path of a recording made by ``holoport
record`` (played with its original timing and looping; it holds RGB-D frames, back-
projected here as a camera's would be, or clouds encoded with the project's codec, decoded
here), or a TUM / Redwood / slambook folder (``capture.sequences``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import codec
from capture import BodyShape, RGBDFrame, SyntheticCamera, rgbd_to_points
from capture.recording import CLOUD, Entry, RecordingPlayer
from capture.source import RGBDSource

CODEC_FORMAT = "holoport-codec"  # a recording's CLOUD entries that codec.decode reads


class PointSource:
    """``read()`` -> (positions float32 (N, 3) metres, colours uint8 (N, 3)) of the person."""

    name = "source"
    crop = "person"  # what read() keeps: "person" (cut out of the room) or "none" (a room)

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def read_rgbd(self) -> RGBDFrame | None:
        """The RGB-D frame behind the next points, where there is one (for recording)."""
        return None

    def cut(self, frame: RGBDFrame) -> tuple[np.ndarray, np.ndarray]:
        """A frame's points as this source keeps them (the person, or the whole room)."""
        return rgbd_to_points(frame) if self.crop == "person" else rgbd_to_points(frame, box=None)

    def close(self) -> None:
        pass


class CameraPoints(PointSource):
    """Any ``capture.source.RGBDSource`` (a camera, a Kinect recording, an image sequence):
    its frames back-projected, cut to the person (``crop="person"``) or kept whole."""

    def __init__(self, source: RGBDSource, crop: str = "person", pose: np.ndarray | None = None) -> None:
        if crop not in ("person", "none"):
            raise ValueError(f"crop must be 'person' or 'none', got {crop!r}")
        self.source, self.crop, self.name = source, crop, source.name
        self.pose = pose  # camera -> participant frame, from a cameras file; else the source's own

    def read_rgbd(self) -> RGBDFrame:
        frame = self.source.read()
        if frame is None:
            raise EOFError(f"{self.name} has ended")
        if self.pose is not None:
            frame.camera_pose = self.pose
        return frame

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        return self.cut(self.read_rgbd())

    def close(self) -> None:
        self.source.close()


class RecordingPoints(PointSource):
    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = True) -> None:
        self.player = RecordingPlayer(path, realtime=realtime, loop=loop)
        self.name = Path(path).name
        self.crop = "none" if self.player.recording.meta.get("crop") == "none" else "person"

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        entry = self.player.read()
        if entry is None:
            raise EOFError(f"{self.name} has ended")
        return self.points(entry)

    def points(self, entry: Entry) -> tuple[np.ndarray, np.ndarray]:
        """An entry's points: decoded, or back-projected (cut to the person when the
        recording's source was one, whole when it was a room)."""
        if entry.kind == CLOUD:
            if entry.head.get("format") != CODEC_FORMAT:
                raise ValueError(f"{self.name}: frame {entry.index} is {entry.head.get('format')!r}, "
                                 f"not a {CODEC_FORMAT} stream")
            return codec.decode(entry.payload)
        return self.cut(entry.rgbd())

    def read_rgbd(self) -> RGBDFrame | None:
        entry = self.player.read()
        return None if entry is None or entry.kind == CLOUD else entry.rgbd()

    def close(self) -> None:
        self.player.close()


class FusedPoints(PointSource):
    """Several cameras of one participant, each placed by the cameras file (``holoport
    calibrate``), read together and merged into one cloud: where two cameras see the same
    surface, points that share a ``voxel``-sized cell become one."""

    def __init__(self, parts: list[CameraPoints], voxel: float | None = 0.005) -> None:
        if not parts:
            raise ValueError("FusedPoints needs at least one camera")
        self.parts, self.voxel = parts, voxel
        self.crop = parts[0].crop
        self.name = " + ".join(p.name for p in parts)

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        from capture.rig import merge_voxels

        clouds = [part.read() for part in self.parts]
        positions = np.concatenate([c[0] for c in clouds])
        colors = np.concatenate([c[1] for c in clouds])
        if self.voxel and len(positions):
            return merge_voxels(positions, colors, self.voxel)
        return positions, colors

    def close(self) -> None:
        for part in self.parts:
            part.close()


def open_points(spec: str, body: int = 0, realtime: bool = True, loop: bool = True,
                cameras: str | Path | None = None) -> PointSource:
    """``synthetic``, a Holoport recording, an Azure Kinect ``.mkv``, or an RGB-D sequence
    folder (TUM, Redwood, slambook: rooms, so nothing is cropped).

    With ``cameras`` (a cameras file from ``holoport calibrate``), ``spec`` names each
    camera's source, ``NAME=SOURCE[,NAME=SOURCE...]``: each camera's points are placed by
    its pose in the file and all are fused into one participant.
    """
    if cameras is not None:
        from capture.rig import Rig

        rig = Rig.load(cameras)
        parts = []
        for item in spec.split(","):
            name, sep, source = item.partition("=")
            if not sep:
                if len(rig.cameras) != 1:
                    raise ValueError(f"--source {spec!r}: with a cameras file of {len(rig.cameras)} cameras, give "
                                     f"NAME=SOURCE for each of {rig.names}")
                name, source = rig.names[0], item
            point_source = open_points(source, body, realtime, loop)
            if not isinstance(point_source, CameraPoints):
                raise ValueError(f"camera {name!r}: {source} holds no RGB-D frames to place")
            parts.append(CameraPoints(point_source.source, crop=point_source.crop, pose=rig.pose(name)))
        return parts[0] if len(parts) == 1 else FusedPoints(parts)
    if spec == "synthetic":
        return CameraPoints(SyntheticCamera(BodyShape.preset(body), seed=body))
    path = Path(spec)
    if path.is_dir():
        from capture.sequences import ImageSequence

        return CameraPoints(ImageSequence(path, realtime=realtime, loop=loop), crop="none")
    if not path.is_file():
        raise FileNotFoundError(f"--source {spec!r}: not 'synthetic', a recording (make one with holoport "
                                "record), an Azure Kinect .mkv or a TUM/Redwood/slambook folder")
    if path.suffix.lower() == ".mkv":
        from capture.azure_kinect import AzureKinectRecording

        return CameraPoints(AzureKinectRecording(path, realtime=realtime, loop=loop), crop="none")
    return RecordingPoints(path, realtime=realtime, loop=loop)
