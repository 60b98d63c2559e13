"""Point cloud <-> bytes. Speaks numpy only: positions float32 (N, 3) m, colors uint8 (N, 3).

>>> from codec import get_codec, decode
>>> data = get_codec("baseline").encode(positions, colors)
>>> positions2, colors2 = decode(data)

For a sequence, ``OctreeEncoder`` carries the coder's statistics from frame to frame and
``OctreeDecoder`` follows it (see docs/codec.md).
"""

from codec.allocator import keep_freed_memory
from codec.baseline import BaselineCodec
from codec.errors import CodecError
from codec.octree import MissingReference, OctreeCodec, OctreeDecoder, OctreeEncoder
from codec.registry import available, decode, from_config, get_codec

keep_freed_memory()  # frames reuse the previous frame's pages (see codec/allocator.py)

__all__ = ["BaselineCodec", "CodecError", "MissingReference", "OctreeCodec", "OctreeDecoder",
           "OctreeEncoder", "available", "decode", "from_config", "get_codec"]
