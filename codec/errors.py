"""The one exception type every decoder raises on bad input."""


class CodecError(ValueError):
    """Malformed, truncated, corrupted or unsupported codec bitstream.

    Decoders raise this (and only this) for anything wrong with the bytes they are given,
    so a caller that receives untrusted data needs a single ``except CodecError``.
    """
