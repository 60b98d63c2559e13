"""Holoport: live holographic conferencing over ZeroMQ.

The conferencing system itself: the wire format (``wire``), the room hub (``hub``), the
participant node (``node``) and its main loop (``participant``), the three-person demo
(``demo``) and the ``holoport`` command (``cli``).
"""

__version__ = "0.1.0"
