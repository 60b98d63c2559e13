"""Where a participant's points come from: the synthetic camera, or a Holoport recording.

``open_points(spec)`` takes what ``holoport join --source`` and ``holoport record --source``
take: ``synthetic`` (the built-in person) or the path of a recording made by ``holoport
record``, played with its original timing and looping. A recording holds RGB-D frames
(back-projected here, as a camera's would be) or clouds already encoded with the project's
codec (decoded here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import codec
from capture import BodyShape, RGBDFrame, SyntheticCamera, rgbd_to_points
from capture.recording import CLOUD, RecordingPlayer

CODEC_FORMAT = "holoport-codec"  # a recording's CLOUD entries that codec.decode reads


class PointSource:
    """``read()`` -> (positions float32 (N, 3) metres, colours uint8 (N, 3)) of the person."""

    name = "source"

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
        if entry.kind == CLOUD:
            if entry.head.get("format") != CODEC_FORMAT:
                raise ValueError(f"{self.name}: frame {entry.index} is {entry.head.get('format')!r}, "
                                 f"not a {CODEC_FORMAT} stream")
            return codec.decode(entry.payload)
        return rgbd_to_points(entry.rgbd())

    def read_rgbd(self) -> RGBDFrame | None:
        entry = self.player.read()
        return None if entry is None or entry.kind == CLOUD else entry.rgbd()

    def close(self) -> None:
        self.player.close()


def open_points(spec: str, body: int = 0, realtime: bool = True, loop: bool = True) -> PointSource:
    if spec == "synthetic":
        return SyntheticPoints(body)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--source {spec!r}: not 'synthetic' and no such recording "
                                "(make one with holoport record)")
    return RecordingPoints(path, realtime=realtime, loop=loop)
