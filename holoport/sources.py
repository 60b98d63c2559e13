"""Where a participant's points come from: the synthetic camera, a Holoport recording, or
an RGB-D image sequence.

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

    def close(self) -> None:
        pass


class SyntheticPoints(PointSource):
    name = "synthetic"

    def __init__(self, body: int = 0) -> None:
        self.camera = SyntheticCamera(BodyShape.preset(body), seed=body)

    def read_rgbd(self) -> RGBDFrame:
        return self.camera.read()

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        return rgbd_to_points(self.camera.read())


class RecordingPoints(PointSource):
    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = True) -> None:
        self.player = RecordingPlayer(path, realtime=realtime, loop=loop)
        self.name = Path(path).name

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
        person = self.player.recording.meta.get("crop", "person") == "person"
        return rgbd_to_points(entry.rgbd()) if person else rgbd_to_points(entry.rgbd(), box=None)

    def read_rgbd(self) -> RGBDFrame | None:
        entry = self.player.read()
        return None if entry is None or entry.kind == CLOUD else entry.rgbd()

    def close(self) -> None:
        self.player.close()


class SequencePoints(PointSource):
    """A TUM, Redwood or slambook folder (``capture.sequences``), frame after frame, looping.
    These are rooms, not people: nothing is cropped, the poses place every frame in it."""

    crop = "none"

    def __init__(self, folder: str | Path) -> None:
        from capture.sequences import ImageSequence

        self.sequence = ImageSequence(folder)
        self.name = f"{Path(folder).name} ({self.sequence.layout})"
        self._next = 0

    def read_rgbd(self) -> RGBDFrame:
        frame = self.sequence.read(self._next % len(self.sequence))
        self._next += 1
        return frame

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        return rgbd_to_points(self.read_rgbd(), box=None)


def open_points(spec: str, body: int = 0, realtime: bool = True, loop: bool = True) -> PointSource:
    """``synthetic``, a recording file, or an RGB-D sequence folder."""
    if spec == "synthetic":
        return SyntheticPoints(body)
    path = Path(spec)
    if path.is_dir():
        return SequencePoints(path)
    if not path.is_file():
        raise FileNotFoundError(f"--source {spec!r}: not 'synthetic', a recording (make one with "
                                "holoport record) or a TUM/Redwood/slambook folder")
    return RecordingPoints(path, realtime=realtime, loop=loop)
