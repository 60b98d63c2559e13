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

    def __init__(self, source: RGBDSource, crop: str = "person") -> None:
        if crop not in ("person", "none"):
            raise ValueError(f"crop must be 'person' or 'none', got {crop!r}")
        self.source, self.crop, self.name = source, crop, source.name

    def read_rgbd(self) -> RGBDFrame:
        frame = self.source.read()
        if frame is None:
            raise EOFError(f"{self.name} has ended")
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


def open_points(spec: str, body: int = 0, realtime: bool = True, loop: bool = True) -> PointSource:
    """``synthetic``, a Holoport recording, an Azure Kinect ``.mkv``, or an RGB-D sequence
    folder (TUM, Redwood, slambook: rooms, so nothing is cropped)."""
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
