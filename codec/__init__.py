"""Point cloud <-> bytes. Speaks numpy only: positions float32 (N, 3) m, colors uint8 (N, 3).

>>> from codec import get_codec, decode
>>> data = get_codec("baseline").encode(positions, colors)
>>> positions2, colors2 = decode(data)

A live stream has one encoder per outgoing stream and one decoder per incoming one
(``codec.base``): ``get_codec("octree").encoder().encode(Cloud(positions, colors))``; the
octree codec's frames continue the previous frame's statistics (see docs/codec.md). New
codecs register themselves (``codec.registry``).
"""

from codec.allocator import keep_freed_memory
from codec.base import Codec, Decoder, Encoded, Encoder
from codec.baseline import BaselineCodec
from codec.errors import CodecError, MissingReference
from codec.layered import LayeredFrame, LayeredOctreeCodec, LayerInfo
from codec.octree import OctreeCodec, OctreeDecoder, OctreeEncoder
from codec.registry import (
                            available,
                            codec_class,
                            decode,
                            decoder_for,
                            for_meeting,
                            from_config,
                            get_codec,
                            register_codec,
)
from codec.types import Cloud

keep_freed_memory()  # frames reuse the previous frame's pages (see codec/allocator.py)

__all__ = ["BaselineCodec", "Cloud", "Codec", "CodecError", "Decoder", "Encoded", "Encoder",
           "LayerInfo", "LayeredFrame", "LayeredOctreeCodec", "MissingReference", "OctreeCodec",
           "OctreeDecoder", "OctreeEncoder", "available",
           "codec_class", "decode", "decoder_for", "for_meeting", "from_config", "get_codec", "register_codec"]
