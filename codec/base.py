"""What every stream codec is: a configured :class:`Codec` that makes an :class:`Encoder` per
outgoing stream and a :class:`Decoder` per incoming one.

Learned from numcodecs (a codec is a small class with a ``codec_id`` whose configuration
round-trips through ``get_config``/``from_config``, found in a registry that takes new codecs
without editing any list) and from aiortc (``Encoder.encode(frame, force_keyframe)``, one
``Decoder`` per incoming stream). A node keeps one decoder per (sender, stream), made by the
registry from the codec id every payload carries, and never needs to know which codec it is.

A point cloud codec's frame is a :class:`~codec.types.Cloud`; the same classes will carry
audio, whose frames are sample blocks.

A codec that keeps no state between frames (each payload decodes alone) needs only
``encode``/``decode``; the stateless :class:`FrameEncoder` and :class:`FrameDecoder` serve
it. A codec whose frames continue earlier ones (the octree codec carries its adaptive
statistics) returns its own encoder and decoder classes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

from codec.types import Cloud


@dataclass(frozen=True)
class Encoded:
    """One encoded frame: the self-describing payload, whether it decodes without any
    earlier frame, and its point count (what the hub checks against the meeting's limit;
    0 for streams that are not point clouds)."""

    payload: bytes
    keyframe: bool
    points: int = 0


class Codec:
    """A configured codec. Subclasses set ``name`` (what users type), ``codec_id`` (the byte
    in the container, unique among registered codecs) and ``kind`` (``"cloud"``)."""

    name: ClassVar[str]
    codec_id: ClassVar[int]
    kind: ClassVar[str] = "cloud"

    def get_config(self) -> dict:
        """The configuration, with ``id`` the codec's name: ``from_config`` rebuilds it. By
        default a dataclass codec's fields (tuples as lists, as JSON keeps them)."""
        if not is_dataclass(self):
            raise NotImplementedError(f"{type(self).__name__} must say its configuration")
        return {"id": self.name, **{f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                                     for f in fields(self)}}

    @classmethod
    def from_config(cls, config: dict) -> Codec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "id"})

    @classmethod
    def for_meeting(cls, **options: Any) -> Codec:
        """The configuration a participant sends with unless told otherwise (``holoport
        join --codec NAME --codec-option KEY=VALUE``); the class's defaults by default."""
        return cls(**options)

    def encode(self, positions, colors) -> bytes:
        """One self-contained frame (what a recording stores: each frame stands alone)."""
        raise NotImplementedError

    @classmethod
    def decode(cls, data, *, max_points: int | None = None) -> Cloud:
        """Decode one self-contained frame; :class:`~codec.errors.CodecError` on bad bytes,
        and a stream declaring more than ``max_points`` points is refused before any
        allocation."""
        raise NotImplementedError

    def encoder(self) -> Encoder:
        """A new encoder for one outgoing stream."""
        return FrameEncoder(self)

    @classmethod
    def decoder(cls) -> Decoder:
        """A new decoder for one incoming stream of this codec."""
        return FrameDecoder(cls)


class Encoder:
    """One outgoing stream's encoder."""

    codec: Codec

    def encode(self, frame: Any, force_keyframe: bool = False) -> Encoded:
        raise NotImplementedError


class Decoder:
    """One incoming stream's decoder; it raises :class:`~codec.errors.MissingReference`
    when a frame continues one it has not decoded (ask the sender for a keyframe)."""

    def decode(self, payload, *, max_points: int | None = None) -> Any:
        raise NotImplementedError


class FrameEncoder(Encoder):
    """For codecs whose every frame stands alone: each one is a keyframe."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def encode(self, frame: Any, force_keyframe: bool = False) -> Encoded:
        positions, colors = frame
        return Encoded(self.codec.encode(positions, colors), True, len(positions))


class FrameDecoder(Decoder):
    def __init__(self, codec_class: type[Codec]) -> None:
        self.codec_class = codec_class

    def decode(self, payload, *, max_points: int | None = None) -> Cloud:
        return Cloud(*self.codec_class.decode(payload, max_points=max_points))
