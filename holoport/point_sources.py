"""Where a participant's points come from, and the one place a source is opened by name.

``capture.rgbd_source.RGBDSource`` is the interface of everything that gives RGB-D frames
(a camera, a Kinect or RealSense recording, an image sequence); this module turns frames
into the participant's points (``PointSource``: ``CameraPoints`` back-projects and cuts an
``RGBDSource``, ``RecordingPoints`` plays a Holoport recording, ``FusedPoints`` merges a
participant's cameras).

``open_points(spec)`` takes what ``holoport join --source`` and ``holoport record --source``
take: ``synthetic`` (the built-in person), ``realsense[:SERIAL]``, the path of a recording
made by ``holoport record`` (played with its original timing and looping; it holds RGB-D
frames, back-projected here as a camera's would be, or clouds encoded with the project's
codec, decoded here), an Azure Kinect ``.mkv``, a RealSense ``.bag``/``.db3``, or a TUM /
Redwood / slambook folder (``capture.sequences``). Each kind of source is an entry of
``SOURCE_KINDS`` (``register_source``): what names it, and how it opens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

import codec
from capture import BodyShape, RGBDFrame, SyntheticCamera, rgbd_to_points
from capture.cut import PersonCut
from capture.placement import place_camera
from capture.recording import CLOUD, Entry, RecordingPlayer
from capture.rgbd_source import RGBDSource

CODEC_FORMAT = "holoport-codec"  # a recording's CLOUD entries that codec.decode reads
CROPS = ("person", "cut", "none")
PERSON_RANGE = (0.3, 3.0)  # metres from a real camera where a participant stands


@lru_cache(maxsize=8)
def _person_cut(pose_bytes: bytes) -> PersonCut:
    pose = np.frombuffer(pose_bytes, np.float64).reshape(4, 4)
    # a camera nobody placed (identity pose) gives camera coordinates: y points down
    up = (0.0, -1.0, 0.0) if np.array_equal(pose, np.eye(4)) else (0.0, 1.0, 0.0)
    return PersonCut.for_camera(pose, up=up)


def person_cut(pose: np.ndarray) -> PersonCut:
    """The person cut for a camera at ``pose`` (camera -> the points' frame)."""
    return _person_cut(np.ascontiguousarray(pose, np.float64).tobytes())


class PointSource:
    """``read()`` -> (positions float32 (N, 3) metres, colours uint8 (N, 3)) of the person."""

    name = "source"
    #: what read() keeps: "person" (the crop box in the participant's frame, for a camera
    #: placed by its pose), "cut" (capture.cut.PersonCut: depth range, floor, outliers,
    #: largest cluster; for a camera nobody placed) or "none" (a room)
    crop = "person"

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def read_rgbd(self) -> RGBDFrame | None:
        """The RGB-D frame behind the next points, where there is one (for recording)."""
        return None

    def cut(self, frame: RGBDFrame) -> tuple[np.ndarray, np.ndarray]:
        """A frame's points as this source keeps them (the person, or the whole room)."""
        if self.crop == "person":
            return rgbd_to_points(frame)
        if self.crop == "none":
            return rgbd_to_points(frame, box=None)
        positions, colors, _ = person_cut(frame.camera_pose).apply(
            *rgbd_to_points(frame, box=None, depth_range=PERSON_RANGE))
        return positions, colors

    def close(self) -> None:
        pass


class CameraPoints(PointSource):
    """Any ``capture.rgbd_source.RGBDSource`` (a camera, a Kinect recording, an image sequence):
    its frames back-projected, cut to the person (``crop="person"``) or kept whole."""

    def __init__(self, source: RGBDSource, crop: str = "person", pose: np.ndarray | None = None) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.source, self.crop, self.name = source, crop, source.name
        self.pose = pose  # camera -> participant frame, from a cameras file; else the source's own

    def read_rgbd(self) -> RGBDFrame:
        frame = self.source.read()
        if frame is None:
            raise EOFError(f"{self.name} has ended")
        if self.pose is None and self.crop == "cut" and np.array_equal(frame.camera_pose, np.eye(4)):
            self.pose = self.place(frame)  # a camera nobody placed: once, from its first frame with a person
        if self.pose is not None:
            frame.camera_pose = self.pose
        return frame

    @staticmethod
    def place(frame: RGBDFrame) -> np.ndarray | None:
        """Camera -> participant pose of an unplaced camera, from the person and floor the cut
        finds in this frame (``capture.placement``); None when nobody is in view yet."""
        cut = person_cut(np.eye(4))
        unplaced = dataclasses.replace(frame, camera_pose=np.eye(4))
        positions, _, report = cut.apply(*rgbd_to_points(unplaced, box=None, depth_range=PERSON_RANGE))
        if len(positions) < 500:
            return None
        return place_camera(positions, report.plane)

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        return self.cut(self.read_rgbd())

    def close(self) -> None:
        self.source.close()


class RecordingPoints(PointSource):
    """A Holoport recording's frames as points. A damaged frame (its record does not check out,
    or its payload does not decode) is reported, counted in ``skipped`` and passed over for the
    next one, so a participant playing a damaged recording stays in the meeting."""

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = True) -> None:
        self.player = RecordingPlayer(path, realtime=realtime, loop=loop)
        self.name = Path(path).name
        crop = self.player.recording.meta.get("crop", "person")
        self.crop = crop if crop in CROPS else "person"
        self._undecodable: set[int] = set()  # frames whose record checked out but whose payload did not

    @property
    def skipped(self) -> int:
        """How many damaged frames were passed over so far."""
        return len(self.player.skipped_frames | self._undecodable)

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        # each frame that fails is marked damaged, so the player passes over it from then on
        # (and raises RecordingError once every frame is): this ends
        while True:
            entry = self.player.read()
            if entry is None:
                raise EOFError(f"{self.name} has ended")
            if (cloud := self.decode(entry)) is not None:
                return cloud

    def decode(self, entry: Entry) -> tuple[np.ndarray, np.ndarray] | None:
        """``points(entry)``, or None when the payload does not decode: the frame is then
        reported to the recording as damaged and counted."""
        if entry.kind == CLOUD and entry.head.get("format") != CODEC_FORMAT:
            return self.points(entry)  # raises: a stream this source cannot read is not damage
        try:
            return self.points(entry)
        except ValueError as exc:  # RecordingError, CodecError
            self._undecodable.add(entry.index)
            self.player.recording.report(entry.index, f"its payload does not decode: {exc}")
            return None

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
        while (entry := self.player.read()) is not None and entry.kind != CLOUD:
            try:
                return entry.rgbd()
            except ValueError as exc:  # a damaged frame: reported, then passed over
                self._undecodable.add(entry.index)
                self.player.recording.report(entry.index, f"its payload does not decode: {exc}")
        return None

    def close(self) -> None:
        self.player.close()


class FusedPoints(PointSource):
    """Several cameras of one participant, each placed by the cameras file (``holoport
    calibrate``), read together and merged into one cloud: where two cameras see the same
    surface, points that share a ``voxel``-sized cell become one."""

    def __init__(self, parts: list[CameraPoints], voxel: float | None = 0.005, place_by: int | None = None) -> None:
        if not parts:
            raise ValueError("FusedPoints needs at least one camera")
        self.parts, self.voxel = parts, voxel
        self.crop = parts[0].crop
        self.name = " + ".join(p.name for p in parts)
        # a cameras file in its reference camera's frame: the rig is placed like one unplaced
        # camera, by camera ``place_by``'s first frame with a person, and every pose follows
        self._place_by = place_by
        self._rig_poses = [p.pose if p.pose is not None else np.eye(4) for p in parts]

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        from capture.rig import merge_voxels

        if self._place_by is not None:
            frame = self.parts[self._place_by].source.read()
            if frame is None:
                raise EOFError(f"{self.name} has ended")
            placement = CameraPoints.place(frame)
            if placement is not None:
                for part, rig_pose in zip(self.parts, self._rig_poses, strict=True):
                    part.pose = placement @ rig_pose
                self._place_by = None
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
                cameras: str | Path | None = None, crop: str | None = None) -> PointSource:
    """``synthetic``, ``realsense[:SERIAL]`` (a live camera), a Holoport recording, an Azure
    Kinect ``.mkv``, a RealSense ``.bag``/``.db3``, or an RGB-D sequence folder.

    ``crop`` (see ``PointSource.crop``) defaults to what each source is: the synthetic
    person is placed, so "person" (its box); a Kinect's camera is not, so "cut"; sequences
    are rooms, so "none"; a recording keeps what it was recorded with.

    With ``cameras`` (a cameras file from ``holoport calibrate``), ``spec`` names each
    camera's source, ``NAME=SOURCE[,NAME=SOURCE...]``: each camera's points are placed by
    its pose in the file and all are fused into one participant.
    """
    if crop is not None and crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
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
            point_source = open_points(source, body, realtime, loop, crop=crop)
            if not isinstance(point_source, CameraPoints):
                raise ValueError(f"camera {name!r}: {source} holds no RGB-D frames to place")
            parts.append(CameraPoints(point_source.source, crop=point_source.crop, pose=rig.pose(name)))
        # a rig in its reference camera's frame (holoport calibrate --frame reference) is not
        # placed in the participant's frame yet: the person and floor in view place it
        unplaced = np.array_equal(rig.pose(rig.reference), np.eye(4)) and parts[0].crop == "cut"
        if len(parts) == 1:
            if unplaced:
                parts[0].pose = None
            return parts[0]
        names = [item.partition("=")[0] for item in spec.split(",")]
        place_by = names.index(rig.reference) if unplaced and rig.reference in names else None
        return FusedPoints(parts, place_by=place_by)
    kind = source_kind(spec)
    if kind is None:
        raise FileNotFoundError(f"--source {spec!r}: not 'synthetic', 'realsense[:SERIAL]', a recording (make one "
                                "with holoport record), an Azure Kinect .mkv, a RealSense .bag/.db3 or a "
                                "TUM/Redwood/slambook folder")
    return SOURCE_KINDS[kind].open(spec, body, realtime, loop, crop)


# ---- the kinds of source, by name --------------------------------------------------------------
#: opener(spec, body, realtime, loop, crop) -> PointSource; crop is None for the kind's own default
Opener = Callable[[str, int, bool, bool, str | None], PointSource]


@dataclasses.dataclass(frozen=True)
class SourceKind:
    """One kind of source ``open_points`` opens: ``matches(spec)`` says a spec names it."""

    name: str
    matches: Callable[[str], bool]
    open: Opener


#: Every kind of source, in the order a spec is tried against them (the first that matches opens it).
SOURCE_KINDS: dict[str, SourceKind] = {}


def register_source(name: str, matches: Callable[[str], bool]) -> Callable[[Opener], Opener]:
    """Decorator: ``open`` opens the sources whose spec ``matches``, as kind ``name``."""
    def register(open_: Opener) -> Opener:
        if name in SOURCE_KINDS:
            raise ValueError(f"source kind {name!r} is already registered")
        SOURCE_KINDS[name] = SourceKind(name, matches, open_)
        return open_
    return register


def source_kind(spec: str) -> str | None:
    """The kind of source ``spec`` names (a key of ``SOURCE_KINDS``), or None."""
    return next((kind.name for kind in SOURCE_KINDS.values() if kind.matches(spec)), None)


def _file_with(*suffixes: str) -> Callable[[str], bool]:
    return lambda spec: Path(spec).suffix.lower() in suffixes and Path(spec).is_file()


@register_source("synthetic", lambda spec: spec == "synthetic")
def _open_synthetic(spec: str, body: int, realtime: bool, loop: bool, crop: str | None) -> PointSource:
    return CameraPoints(SyntheticCamera(BodyShape.preset(body), seed=body), crop=crop or "person")


@register_source("realsense", lambda spec: spec == "realsense" or spec.startswith("realsense:"))
def _open_realsense(spec: str, body: int, realtime: bool, loop: bool, crop: str | None) -> PointSource:
    from capture.realsense import RealSenseSource

    serial = spec.partition(":")[2] or None
    return CameraPoints(RealSenseSource(serial=serial), crop=crop or "cut")


@register_source("sequence", lambda spec: Path(spec).is_dir())
def _open_sequence(spec: str, body: int, realtime: bool, loop: bool, crop: str | None) -> PointSource:
    from capture.sequences import ImageSequence

    return CameraPoints(ImageSequence(Path(spec), realtime=realtime, loop=loop), crop=crop or "none")


@register_source("azure-kinect", _file_with(".mkv"))
def _open_azure_kinect(spec: str, body: int, realtime: bool, loop: bool, crop: str | None) -> PointSource:
    from capture.azure_kinect import AzureKinectRecording

    return CameraPoints(AzureKinectRecording(Path(spec), realtime=realtime, loop=loop), crop=crop or "cut")


@register_source("realsense-file", _file_with(".bag", ".db3"))
def _open_realsense_file(spec: str, body: int, realtime: bool, loop: bool, crop: str | None) -> PointSource:
    from capture.realsense import RealSenseSource

    return CameraPoints(RealSenseSource(file=Path(spec), realtime=realtime, loop=loop), crop=crop or "cut")


@register_source("recording", lambda spec: Path(spec).is_file())  # any other file: a Holoport recording
def _open_recording(spec: str, body: int, realtime: bool, loop: bool, crop: str | None) -> PointSource:
    source = RecordingPoints(spec, realtime=realtime, loop=loop)
    if crop is not None:
        source.crop = crop
    return source
