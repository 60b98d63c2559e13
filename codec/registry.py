"""Codecs by name and by the id their streams carry, so a receiver needs only the bytes.

The project's codecs register themselves with :func:`register_codec` when their module is
imported. Codecs from other modules or packages register through the ``holoport.codecs``
entry point group (as numcodecs finds its codecs), which this registry loads the first time
it is asked: one line in a ``pyproject.toml``, no edit to any list here::

    [project.entry-points."holoport.codecs"]
    draco = "codec.draco:DracoCodec"
"""

from __future__ import annotations

import logging
from dataclasses import fields, is_dataclass
from importlib.metadata import entry_points

from codec import container
from codec.base import Codec, Decoder
from codec.errors import CodecError
from codec.types import Cloud

log = logging.getLogger(__name__)

ENTRY_POINTS = "holoport.codecs"
_BY_NAME: dict[str, type[Codec]] = {}
_BY_ID: dict[int, type[Codec]] = {}
_plugins_loaded = False


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Make ``cls`` known by its ``name`` and ``codec_id`` (a class decorator). Registering
    the same class again is harmless; another class under a taken name or id is an error."""
    for key, table in ((cls.name, _BY_NAME), (cls.codec_id, _BY_ID)):
        other = table.get(key)
        if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"codec {cls.__module__}.{cls.__qualname__}: {key!r} is taken by "
                             f"{other.__module__}.{other.__qualname__}")
    if not 0 <= cls.codec_id <= 255:
        raise ValueError(f"codec id {cls.codec_id} out of range 0..255")
    _BY_NAME[cls.name] = _BY_ID[cls.codec_id] = cls
    return cls


def _load_plugins() -> None:
    """Import every module named in the entry point group, once; one that fails to load is
    logged and left out, so a broken plugin cannot stop a meeting with the built-in codecs."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINTS):
        try:
            loaded = point.load()
            if isinstance(loaded, type) and issubclass(loaded, Codec):
                register_codec(loaded)
        except Exception as exc:
            log.warning("codec plugin %s (%s) did not load: %s", point.name, point.value, exc)


def available(kind: str | None = None) -> list[str]:
    """Registered codec names (of one ``kind``, e.g. ``"cloud"``, when given)."""
    _load_plugins()
    return sorted(n for n, c in _BY_NAME.items() if kind is None or c.kind == kind)


def codec_class(name: str) -> type[Codec]:
    """The codec class registered under ``name``; unknown names list the known ones."""
    _load_plugins()
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(available())}") from None


def get_codec(name: str, **params) -> Codec:
    """Build a codec by name with its parameters (validated by the codec)."""
    return codec_class(name)(**params)


def for_meeting(name: str, **options) -> Codec:
    """The codec ``name`` as a participant sends with it (:meth:`Codec.for_meeting`), with
    ``options`` (``--codec-option KEY=VALUE``) over its defaults."""
    cls = codec_class(name)
    try:
        return cls.for_meeting(**options)
    except TypeError as exc:  # an option the codec does not have
        known = ", ".join(f.name for f in fields(cls)) if is_dataclass(cls) else "see its documentation"
        raise ValueError(f"codec {name!r}: {exc} (its options: {known})") from None


def from_config(config: dict) -> Codec:
    """Rebuild a codec from ``get_config()``'s output."""
    return codec_class(str(config.get("id"))).from_config(config)


def class_of(data) -> type[Codec]:
    """The registered codec that wrote a payload, from the id in its container."""
    codec_id = container.peek_codec_id(data)
    cls = _BY_ID.get(codec_id)
    if cls is None:
        _load_plugins()
        cls = _BY_ID.get(codec_id)
    if cls is None:
        raise CodecError(f"unknown codec id {codec_id}")
    return cls


def decoder_for(data) -> Decoder:
    """A new stream decoder for the codec that wrote ``data`` (a stream's first payload)."""
    return class_of(data).decoder()


def decode(data: bytes, *, max_points: int | None = None) -> Cloud:
    """Decode one self-contained frame of any registered codec; raises :class:`CodecError`
    on malformed input.

    ``max_points``: the most points the caller accepts in a frame (a meeting's limit, which
    the hub announces); a stream declaring more is refused before anything is allocated.
    """
    cls = class_of(data)
    if cls.kind != "cloud":
        raise CodecError(f"a {cls.kind} codec's payload ({cls.name}), not a point cloud")
    return Cloud(*cls.decode(data, max_points=max_points))
