"""The one interface every RGB-D source has: cameras, recordings, image sequences.

``read()`` gives the next registered ``RGBDFrame`` (timestamps in seconds, increasing), or
None at the end; iterating gives every frame; ``close()`` (or ``with``) releases the
device or file. A subclass implements ``_next_frame()`` and, to loop, ``_rewind()``; the
base paces frames at their recorded timing when ``realtime`` and keeps timestamps
increasing across loops.
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
        frame = self._next_frame()
        if frame is None and self.loop and self._count:
            self._rewind()
            self._loop_offset = (self._last or 0.0) + 1.0 / self.fps
            first = self._next_frame()
            if first is not None:
                self._loop_offset -= first.timestamp
            frame = first
        if frame is None:
            return None
        frame.timestamp += self._loop_offset
        if self._first is None:
            self._first, self._wall0 = frame.timestamp, time.monotonic()
        elif self.realtime:
            wait = self._wall0 + (frame.timestamp - self._first) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last = frame.timestamp
        frame.index = self._count
        self._count += 1
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
