"""The one interface every RGB-D source has: cameras, recordings, image sequences.

This is the frames side; ``holoport.point_sources`` opens a source by name (``open_points``,
its ``SOURCE_KINDS`` registry) and turns its frames into the participant's points.

``read()`` gives the next registered ``RGBDFrame`` (timestamps in seconds, increasing), or
None at the end; iterating gives every frame; ``close()`` (or ``with``) releases the
device or file. A subclass implements ``_next_frame()`` and, to loop, ``_rewind()``; the
base plays frames at their recorded timing when ``realtime`` (waiting for early ones,
skipping those a slow reader missed) and keeps timestamps increasing across loops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from capture.types import Intrinsics, RGBDFrame


class RGBDSource:
    name = "source"
    intrinsics: Intrinsics
    fps = 30.0  # used to space a looped recording's restart

    def __init__(self, realtime: bool = False, loop: bool = False) -> None:
        self.realtime = realtime
        self.loop = loop
        self._count = 0  # frames delivered
        self._loop_offset = 0.0
        self._first: float | None = None  # first timestamp delivered
        self._last: float | None = None
        self._wall0 = 0.0

    def _next_frame(self) -> RGBDFrame | None:
        raise NotImplementedError

    def _rewind(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot loop")

    def read(self) -> RGBDFrame | None:
        """The next frame; with ``realtime``, the one due now: it waits for an early frame
        and skips frames a slow reader has missed, as a camera would."""
        while True:
            frame = self._next_raw()
            if frame is None:
                return None
            if self._first is None:
                self._first, self._wall0 = frame.timestamp, time.monotonic()
            elif self.realtime:
                wait = self._wall0 + (frame.timestamp - self._first) - time.monotonic()
                if wait < -1.0 / self.fps:
                    self._last = frame.timestamp
                    continue  # more than a frame late: the next one is due sooner
                if wait > 0:
                    time.sleep(wait)
            self._last = frame.timestamp
            frame.index = self._count
            self._count += 1
            return frame

    def _next_raw(self) -> RGBDFrame | None:
        """The next recorded frame, timestamps kept increasing across loops."""
        frame = self._next_frame()
        if frame is None and self.loop and self._last is not None:
            self._rewind()
            self._loop_offset = self._last + 1.0 / self.fps
            frame = self._next_frame()
            if frame is not None:
                self._loop_offset -= frame.timestamp
        if frame is not None:
            frame.timestamp += self._loop_offset
        return frame

    def __iter__(self) -> Iterator[RGBDFrame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        pass

    def __enter__(self) -> RGBDSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
