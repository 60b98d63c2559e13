"""The send path: an encoder per outgoing stream, one sequence count over all of them,
keyframes when receivers ask, and the recent frames' send times that receivers' arrival
reports are matched against (rate control, ``holoport.link.live``)."""

from __future__ import annotations

from collections.abc import Callable

import codec
from holoport import wire
from holoport.clock import ClockSync

SENT_LOG = 512  # frames whose send time and size are kept for arrival reports

UPLINK = 0  # the "receiver" of the hub's reports of our parts' arrival (no member has id 0)
# receiver id, seq, sent, arrived, bytes; times on our clock
FeedbackCallback = Callable[[int, int, float, float, int], None]


class Senders:
    def __init__(self, encoder: codec.Encoder) -> None:
        self.encoders: dict[int, codec.Encoder] = {0: encoder}
        self.seq = 0
        self._key_wanted: set[int] = set()
        self._sent_log: dict[int, tuple[float, int]] = {}  # seq -> (sent, bytes), recent ones
        self.on_feedback: FeedbackCallback | None = None

    def add(self, encoder: codec.Encoder) -> int:
        """Another outgoing stream (a second view, voice); returns its number."""
        stream = len(self.encoders)
        if stream >= wire.MAX_STREAMS:
            raise ValueError(f"a participant sends at most {wire.MAX_STREAMS} streams")
        self.encoders[stream] = encoder
        return stream

    def encode(self, stream: int, frame) -> codec.Encoded:
        force = stream in self._key_wanted
        self._key_wanted.discard(stream)
        return self.encoders[stream].encode(frame, force_keyframe=force)

    def want_keyframe(self, stream: int) -> None:
        """A receiver could not decode this stream: its next frame is a keyframe."""
        if stream in self.encoders:
            self._key_wanted.add(stream)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def sent(self, seq: int, at: float, nbytes: int) -> None:
        if self.on_feedback is not None:
            self._sent_log[seq] = (at, nbytes)
            self._sent_log.pop(seq - SENT_LOG, None)

    def sent_frame(self, seq: int) -> tuple[float, int] | None:
        """(sent at, payload bytes) of one of our recent frames, while ``on_feedback`` is set."""
        return self._sent_log.get(seq)

    def feedback(self, h: dict, clock: ClockSync) -> None:
        """A receiver's arrival reports of our frames (or the hub's, ``UPLINK``), handed to
        ``on_feedback`` on our clock."""
        if self.on_feedback is None or not wire.need(h, "r"):
            return
        if h.get("up") is True:  # the hub's own arrival times: our uplink
            receiver = UPLINK
        elif "from" in h:
            receiver = h["from"]
        else:
            return
        for r in h["r"]:
            if r[0] not in self._sent_log:
                continue
            sent, nbytes = self._sent_log[r[0]]
            arrived = clock.from_hub(r[1])
            if -1.0 <= arrived - sent <= 30.0:  # else a broken clock or a lie: not evidence
                self.on_feedback(receiver, r[0], sent, arrived, nbytes)
