"""Where the shared data lives: real point clouds, RGB-D recordings, network traces.

``$HOLOPORT_DATA`` when set, else ``../shared/data`` beside the checkout. The tests skip
what needs it when it is absent; the benchmarks and ``holoport link`` say how to point at it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Where the shared data lives unless $HOLOPORT_DATA says otherwise.
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def data_root() -> Path:
    return Path(os.environ.get("HOLOPORT_DATA", DEFAULT_DATA))
