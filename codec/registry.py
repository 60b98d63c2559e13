"""Codecs by name and by the id their streams carry, so ``decode`` needs only bytes."""

from __future__ import annotations

import numpy as np

from codec import container
from codec.baseline import BaselineCodec
from codec.errors import CodecError
from codec.octree import OctreeCodec

Codec = BaselineCodec | OctreeCodec
_CODECS = {cls.name: cls for cls in (BaselineCodec, OctreeCodec)}
_BY_ID = {cls.codec_id: cls for cls in _CODECS.values()}


def available() -> list[str]:
    return sorted(_CODECS)


def codec_class(name: str) -> type[Codec]:
    """The codec class registered under ``name``; unknown names list the known ones."""
    try:
        return _CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(available())}") from None


def get_codec(name: str, **params) -> Codec:
    """Build a codec by name with its parameters (validated by the codec)."""
    return codec_class(name)(**params)


def from_config(config: dict) -> Codec:
    """Rebuild a codec from ``get_config()``'s output."""
    return codec_class(str(config.get("id"))).from_config(config)


def decode(data: bytes, *, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode any Holoport codec stream; raises :class:`CodecError` on malformed input.

    ``max_points``: the most points the caller accepts in a frame (a meeting's limit, which
    the hub announces); a stream declaring more is refused before anything is allocated.
    """
    codec_id = container.peek_codec_id(data)
    if codec_id not in _BY_ID:
        raise CodecError(f"unknown codec id {codec_id}")
    return _BY_ID[codec_id].decode(data, max_points=max_points)
