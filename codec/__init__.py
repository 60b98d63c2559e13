"""Point cloud <-> bytes. Speaks numpy only: positions float32 (N, 3) m, colors uint8 (N, 3).

>>> from codec import get_codec, decode
>>> data = get_codec("baseline").encode(positions, colors)
>>> positions2, colors2 = decode(data)
"""

from codec.baseline import BaselineCodec
from codec.errors import CodecError
from codec.octree import OctreeCodec
from codec.registry import available, decode, from_config, get_codec

__all__ = ["BaselineCodec", "CodecError", "OctreeCodec", "available", "decode", "from_config",
           "get_codec"]
