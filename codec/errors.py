"""The one exception type every decoder raises on bad input."""


class CodecError(ValueError):
    """Malformed, truncated, corrupted or unsupported codec bitstream.

    Decoders raise this (and only this) for anything wrong with the bytes they are given,
    so a caller that receives untrusted data needs a single ``except CodecError``.
    """


class MissingReference(CodecError):
    """A frame coded against an earlier frame that this decoder has not decoded: the
    receiver asks the sender for a keyframe."""
