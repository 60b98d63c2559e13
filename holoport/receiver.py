"""The receive path: one decoder per (sender, stream), the newest frame per stream, and
keyframe requests when a frame continues one we never decoded.

The decoder for a stream is made by the codec registry from the codec id its first payload
carries, so the node never needs to know which codec a sender chose; a sender that switches
codec simply starts a new decoder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import codec
from codec.types import validate_cloud
from holoport import wire
from holoport.session import NodeCounters

log = logging.getLogger("holoport.node")

KEYFRAME_ASK_S = 0.5  # ask a sender for a keyframe at most this often per stream


@dataclass
class RemoteFrame:
    sender: int
    name: str
    seat: int
    seq: int
    frame: Any  # what the stream's decoder gave: a codec.Cloud for hologram streams
    ts: dict  # stage timestamps from the header, plus received and decoded
    nbytes: int
    stream: int = 0
    layers: int = 0  # parts of a layered frame it was decoded from (0: not a layered stream)

    @property
    def positions(self) -> np.ndarray:
        return self.frame.positions

    @property
    def colors(self) -> np.ndarray:
        return self.frame.colors


StreamKey = tuple[int, int]  # (sender id, stream)


class Receivers:
    """Decoders and keyframe requests of every incoming stream."""

    def __init__(self, counters: NodeCounters) -> None:
        self.counters = counters
        self._decoders: dict[StreamKey, tuple[int, codec.Decoder]] = {}  # with its codec's id
        self._asked_key: dict[StreamKey, float] = {}

    def decode(self, key: StreamKey, payload, max_points: int) -> Any | None:
        """The decoded frame; None (counted) when it cannot be decoded. Raises
        :class:`codec.MissingReference` when a keyframe is needed (see :meth:`should_ask`)."""
        try:
            cls = codec.registry.class_of(payload)
            if cls.kind != "cloud":  # a frame stream carries clouds: voice has its own messages
                raise codec.CodecError(f"a {cls.kind} codec's payload ({cls.name}) where a cloud belongs")
            codec_id, decoder = self._decoders.get(key, (None, None))
            if codec_id != cls.codec_id:  # the stream's first frame, or the sender switched codec
                decoder = cls.decoder()
                self._decoders[key] = (cls.codec_id, decoder)
            frame = decoder.decode(payload, max_points=max_points)
            try:  # whatever a plug-in returns: n finite positions, n RGB colours
                frame = codec.Cloud(*validate_cloud(*frame))
            except (TypeError, ValueError) as exc:
                raise codec.CodecError(f"the decoder gave no valid cloud: {exc}") from None
            return frame
        except codec.MissingReference:  # we skipped or lost the frame this one continues
            self.counters.missing_reference += 1
            raise
        except Exception as exc:  # a CodecError, or whatever a plug-in's decoder lets escape
            self.counters.decode_errors += 1
            log.warning("dropped an undecodable frame from %s (stream %d): %s", key[0], key[1], exc)
            return None

    def decode_parts(self, key: StreamKey, parts: list, max_points: int) -> Any | None:
        """A layered frame from its base and the enhancement parts after it; None (counted)
        when they cannot be decoded. Every layered frame stands alone: no references."""
        try:
            cls = codec.registry.class_of(parts[0])
            if not hasattr(cls, "decode_layers"):
                raise codec.CodecError(f"{cls.name} payloads are not layered")
            return codec.Cloud(*validate_cloud(*cls.decode_layers(parts, max_points=max_points)))
        except Exception as exc:  # a CodecError, or whatever a plug-in lets escape
            self.counters.decode_errors += 1
            log.warning("dropped an undecodable layered frame from %s (stream %d): %s", key[0], key[1], exc)
            return None

    def should_ask(self, key: StreamKey) -> bool:
        """Whether to ask for a keyframe of this stream now (at most every KEYFRAME_ASK_S)."""
        if time.monotonic() - self._asked_key.get(key, -1.0) < KEYFRAME_ASK_S:
            return False
        self._asked_key[key] = time.monotonic()
        return True

    def forget(self, sender: int | None = None) -> None:
        """Drop the streams of one sender (it left), or of all (a new membership)."""
        for key in [k for k in self._decoders if sender is None or k[0] == sender]:
            del self._decoders[key]
        for key in [k for k in self._asked_key if sender is None or k[0] == sender]:
            del self._asked_key[key]


@dataclass
class PendingFrame:
    """The newest layered frame of a stream, part by part as they come."""

    head: dict  # its base part's header
    parts: dict  # layer -> payload
    shown: int = 0  # parts it was last decoded with

    def ready(self) -> list:
        """The base and every part after it with none missing in between."""
        out = []
        while len(out) in self.parts:
            out.append(self.parts[len(out)])
        return out


class LayeredFrames:
    """Parts of each stream's newest layered frame: a part of an older frame, or of a frame
    whose base never came, is dropped; a part that extends what was decoded asks for the
    frame to be decoded again, with more detail."""

    def __init__(self) -> None:
        self.frames: dict[StreamKey, PendingFrame] = {}
        self.parts_late = 0  # parts of a frame that a newer one had replaced

    def start(self, key: StreamKey, head: dict, payload) -> None:
        self.frames[key] = PendingFrame(head, {0: payload.buffer if hasattr(payload, "buffer") else payload})

    def add(self, key: StreamKey, head: dict, payload) -> bool:
        """Keep a part; True when the frame can now be decoded with more parts than before."""
        pending = self.frames.get(key)
        if pending is None or head.get("base") != pending.head["seq"] or head["layer"] in pending.parts:
            self.parts_late += 1
            return False
        pending.parts[head["layer"]] = payload.buffer if hasattr(payload, "buffer") else payload
        return len(pending.ready()) > pending.shown

    def forget(self, sender: int | None = None) -> None:
        for key in [k for k in self.frames if sender is None or k[0] == sender]:
            del self.frames[key]


def keyframe_request(key: StreamKey) -> dict:
    return wire.header(wire.MessageType.KEYFRAME, of=key[0], stream=key[1])
