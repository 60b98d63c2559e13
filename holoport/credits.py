"""The receive window: how many frames the hub may have on their way to us at once.

The hub sends a member at most ``window`` frames ahead and meanwhile keeps only each
sender's newest. Every frame taken off the socket is credit to hand back; a node that stops
reading holds up nobody and, when it reads again, gets fresh frames (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable

from holoport import wire
from holoport.wire import MAX_CREDIT, MessageType


class CreditWindow:
    def __init__(self, window: int = 4) -> None:
        if not 1 <= window <= MAX_CREDIT:
            raise ValueError(f"credit must be in 1..{MAX_CREDIT} frames, got {window}")
        self.window = window
        self.owed = 0  # frames taken and not yet handed back

    def taken(self, frames: int) -> None:
        self.owed += frames

    def reset(self) -> None:
        """A (re)join starts a fresh window."""
        self.owed = 0

    def hand_back(self, send: Callable[[dict], bool]) -> None:
        """Tell the hub about drained frames. Credit whose message could not be queued is
        kept and retried on the next call, else a full queue would shrink the window for good."""
        while self.owed > 0:
            n = min(self.owed, MAX_CREDIT)
            if not send(wire.header(MessageType.CREDIT, n=n)):
                return
            self.owed -= n
