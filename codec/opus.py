"""Opus voice (48 kHz mono, 20 or 10 ms frames) as a Holoport stream codec.

Encoding goes through PyAV's libopus encoder (``application=voip``, ``frame_duration``,
``fec``, ``packet_loss`` and the bit rate; FFmpeg honours all of these, and the encoder
refuses to start if it ever ignores one). FFmpeg has no DTX option for libopus, and none is
needed: DTX here is webrtcvad's voice activity with a hangover, so one decision says "send
nothing" and tells the room who is speaking (a frame rising well above the noise floor is
sent too, so no word loses its onset). During silence the encoder keeps encoding every
frame (its state stays continuous) and sends one packet every ``keepalive_ms``, as Opus DTX
sends its comfort-noise updates, so a receiver knows the stream is alive. So encoding stays
with PyAV; only decoding calls libopus directly (``codec._opus_lib``): FFmpeg's decoder
cannot rebuild a lost frame from the next packet's in-band FEC, nor conceal one on request.

Payload: the Holoport container's fixed overhead (15 bytes) would be a quarter of a
60-byte voice packet, so a voice payload has a compact 2-byte prefix instead::

    offset  size  field
    0       1     0xA0 | flags   (high nibble 0xA marks this layout; flag bit 0 = speech;
                                  bits 1-3 reserved, 0). Never b"H", the container's first byte.
    1       1     codec id (4)
    2       ...   one Opus packet (RFC 6716), 1..3825 bytes, of exactly one stream frame

:func:`peek_voice` reads it without decoding, so a hub can tell who speaks. A receiver knows
a voice stream from its message type and makes ``OpusCodec.decoder()``: the registry's
``class_of``/``decoder_for`` read only the container and refuse this prefix (CodecError)
until ``container.peek_codec_id`` learns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from codec import _opus_lib
from codec.base import Codec, Decoder, Encoder
from codec.container import VOICE_TAG
from codec.errors import CodecError
from codec.registry import register_codec

SAMPLE_RATE = 48_000  # Hz; capture.audio.SAMPLE_RATE (Opus's native rate)
FRAME_MS = (10, 20)
DEFAULT_FRAME_MS = 20
VOICE_MARK = VOICE_TAG  # high nibble of a compact voice payload's first byte (codec.container)
SPEECH_FLAG = 0x01
PREFIX_SIZE = 2
MAX_OPUS_BYTES = 1275 * 3  # RFC 6716's largest packet (three 1275-byte frames in code 3)
#: webrtcvad calls its first ~4 frames speech whatever they hold, while it learns the noise
#: floor: that long, frames are sent but not flagged as speech.
VAD_WARMUP_MS = 100
#: webrtcvad calls the quiet first frame of a word silence, and DTX would drop it: the word
#: starts clipped (PESQ WB 4.09 without DTX, 3.93 with, on CMU ARCTIC at 24 kbit/s). A frame
#: this far above the tracked noise floor is sent whatever webrtcvad says (4.05).
ONSET_DB = 9.0
FLOOR_RISE_DB_PER_S = 3.0  # how fast the noise floor estimate follows a louder background
MIN_ONSET_DBFS = -70.0  # quieter than this is never an onset worth sending (digital silence)


@dataclass(frozen=True)
class VoicePacket:
    """One frame to send: the payload, whether the speaker was talking, the samples it holds."""

    payload: bytes
    speech: bool
    samples: int


def pack_voice(codec_id: int, speech: bool, body: bytes) -> bytes:
    return bytes((VOICE_MARK | (SPEECH_FLAG if speech else 0), codec_id)) + body


def peek_voice(payload: bytes | bytearray | memoryview) -> tuple[int, bool]:
    """The codec id and speech flag of a voice payload, from its 2-byte prefix only."""
    try:
        buf = memoryview(payload).cast("B")
    except TypeError:
        raise CodecError(f"a voice payload is bytes, not {type(payload).__name__}") from None
    if len(buf) < PREFIX_SIZE + 1:
        raise CodecError(f"voice payload of {len(buf)} bytes is too short")
    if buf[0] & 0xF0 != VOICE_MARK:
        what = "a Holoport container stream" if bytes(buf[:1]) == b"H" else f"first byte 0x{buf[0]:02x}"
        raise CodecError(f"not a voice payload ({what})")
    if buf[0] & 0x0E:
        raise CodecError(f"unknown voice payload flags 0x{buf[0] & 0x0F:x}")
    return buf[1], bool(buf[0] & SPEECH_FLAG)


def _flag(name: str, value: object) -> bool:
    """A yes/no setting as ``--codec-option KEY=VALUE`` or JSON may give it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "yes", "no", "1", "0"):
        return value.lower() in ("true", "on", "yes", "1")
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _av():
    try:
        import av
    except ImportError:
        raise ValueError("the opus codec needs PyAV: pip install av") from None
    return av


def _vad():
    try:
        import webrtcvad
    except ImportError:
        raise ValueError("the opus codec needs webrtcvad: pip install webrtcvad-wheels") from None
    return webrtcvad


@register_codec
@dataclass(frozen=True)
class OpusCodec(Codec):
    """Opus voice. ``loss_percent``: the loss the encoder plans its in-band FEC for;
    ``vad_mode``: webrtcvad's aggressiveness 0 (keeps most) .. 3."""

    codec_id = 4
    name = "opus"
    kind = "audio"

    bitrate: int = 24_000
    frame_ms: int = DEFAULT_FRAME_MS
    fec: bool = True
    loss_percent: int = 10
    dtx: bool = True
    vad_mode: int = 2
    hangover_ms: int = 200
    keepalive_ms: int = 400

    def __post_init__(self) -> None:
        for name in ("fec", "dtx"):
            object.__setattr__(self, name, _flag(name, getattr(self, name)))
        for name in ("bitrate", "frame_ms", "loss_percent", "vad_mode", "hangover_ms", "keepalive_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 6_000 <= self.bitrate <= 256_000:
            raise ValueError(f"bitrate must be 6000..256000 bit/s for mono voice, got {self.bitrate}")
        if self.frame_ms not in FRAME_MS:
            raise ValueError(f"frame_ms must be one of {FRAME_MS}, got {self.frame_ms}")
        if not 0 <= self.loss_percent <= 100:
            raise ValueError(f"loss_percent must be 0..100, got {self.loss_percent}")
        if self.fec and self.loss_percent == 0:
            raise ValueError("fec needs an expected loss_percent above 0 (Opus adds no FEC for a lossless path)")
        if not 0 <= self.vad_mode <= 3:
            raise ValueError(f"vad_mode must be 0..3, got {self.vad_mode}")
        if self.hangover_ms < 0 or self.keepalive_ms < self.frame_ms:
            raise ValueError("hangover_ms must be >= 0 and keepalive_ms at least one frame")
        _av(), _vad(), _opus_lib.library()  # a missing library is said when the codec is chosen

    @property
    def frame(self) -> int:
        """Samples per frame."""
        return SAMPLE_RATE * self.frame_ms // 1000

    def encoder(self) -> VoiceEncoder:
        return VoiceEncoder(self)

    @classmethod
    def decoder(cls, frame_ms: int | None = None) -> VoiceDecoder:
        """A decoder for one incoming voice stream; ``frame_ms`` None: the stream's first
        packet sets it (a decoder made from the payload, as the registry does)."""
        return VoiceDecoder(frame_ms)


class VoiceEncoder(Encoder):
    """One outgoing voice stream: a frame in, a packet out, or None where DTX sends nothing."""

    def __init__(self, codec: OpusCodec) -> None:
        self.codec = codec
        ctx = _av().CodecContext.create("libopus", "w")
        ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = SAMPLE_RATE, "mono", "flt", codec.bitrate
        ctx.options = {"application": "voip", "frame_duration": str(codec.frame_ms), "vbr": "on",
                       "fec": "1" if codec.fec else "0", "packet_loss": str(codec.loss_percent)}
        ctx.open()
        if ctx.options:  # PyAV leaves the options FFmpeg did not take
            raise RuntimeError(f"FFmpeg's libopus encoder ignored {dict(ctx.options)}")
        self._ctx = ctx
        self._vad = _vad().Vad(codec.vad_mode)
        self._hangover = math.ceil(codec.hangover_ms / codec.frame_ms)
        self._keepalive = max(1, codec.keepalive_ms // codec.frame_ms)
        self._warmup = math.ceil(VAD_WARMUP_MS / codec.frame_ms)
        self._floor = math.inf  # noise floor (RMS): drops at once, rises FLOOR_RISE_DB_PER_S
        self._rise = 10 ** (FLOOR_RISE_DB_PER_S * codec.frame_ms / 1000 / 20)
        self._n = 0  # frames encoded
        self._last_voice = self._last_sent = -(1 << 30)

    def encode(self, samples: np.ndarray, force_keyframe: bool = False) -> VoicePacket | None:
        """Encode one frame (float32 mono in [-1, 1], exactly ``codec.frame`` samples).
        ``force_keyframe``: send it even where DTX would not (Opus has no keyframes)."""
        frame = self.codec.frame
        x = np.asarray(samples, np.float32)
        if x.shape != (frame,):
            raise ValueError(f"an opus frame is {frame} mono samples, got shape {x.shape}")
        x = np.clip(np.nan_to_num(x), -1.0, 1.0)
        av = _av()
        block = av.AudioFrame.from_ndarray(x.reshape(1, frame), format="flt", layout="mono")
        block.sample_rate, block.pts = SAMPLE_RATE, self._n * frame
        packets = self._ctx.encode(block)
        n, self._n = self._n, self._n + 1
        if len(packets) != 1:  # libopus answers every frame at once; anything else is a bug
            raise RuntimeError(f"libopus gave {len(packets)} packets for one frame")
        warm = n >= self._warmup
        if self._vad.is_speech((x * 32767).astype("<i2").tobytes(), SAMPLE_RATE) and warm:
            self._last_voice = n
        speech = n - self._last_voice < max(1, self._hangover)
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        self._floor = min(rms, self._floor * self._rise)
        onset = rms > max(self._floor * 10 ** (ONSET_DB / 20), 10 ** (MIN_ONSET_DBFS / 20))
        quiet = warm and not (speech or onset or force_keyframe)
        if self.codec.dtx and quiet and n - self._last_sent < self._keepalive:
            return None
        self._last_sent = n
        return VoicePacket(pack_voice(self.codec.codec_id, speech, bytes(packets[0])), speech, frame)


class VoiceDecoder(Decoder):
    """One incoming voice stream. Every output is exactly one frame of float32 samples.

    ``counts``: frames ``decoded``, rebuilt from in-band ``fec``, ``concealed`` (loss
    concealment, including a recovery whose next packet had no FEC copy, or could not be
    told to have one by a libopus before 1.5) and ``silent`` (frames DTX did not send)."""

    def __init__(self, frame_ms: int | None = None) -> None:
        if frame_ms is not None and frame_ms not in FRAME_MS:
            raise ValueError(f"frame_ms must be one of {FRAME_MS}, got {frame_ms}")
        self.frame: int | None = None if frame_ms is None else SAMPLE_RATE * frame_ms // 1000
        self.speech = False  # the last packet's voice activity flag
        self.counts = {"decoded": 0, "fec": 0, "concealed": 0, "silent": 0}
        self._opus = _opus_lib.OpusDecoderState(SAMPLE_RATE)

    def _packet(self, payload) -> tuple[bytes, bool]:
        """The Opus packet of a payload and its speech flag, after every check."""
        codec_id, speech = peek_voice(payload)
        if codec_id != OpusCodec.codec_id:
            raise CodecError(f"codec id {codec_id} is not the opus codec ({OpusCodec.codec_id})")
        packet = bytes(memoryview(payload).cast("B")[PREFIX_SIZE:])
        if len(packet) > MAX_OPUS_BYTES:
            raise CodecError(f"Opus packet of {len(packet)} bytes exceeds {MAX_OPUS_BYTES}")
        samples = _opus_lib.packet_samples(packet, SAMPLE_RATE)
        if self.frame is None:
            if samples not in (SAMPLE_RATE * ms // 1000 for ms in FRAME_MS):
                raise CodecError(f"an Opus voice frame is 10 or 20 ms, this packet holds {samples} samples")
            self.frame = samples
        elif samples != self.frame:
            raise CodecError(f"Opus packet of {samples} samples in a stream of {self.frame}-sample frames")
        return packet, speech

    @property
    def _frame(self) -> int:
        return self.frame or SAMPLE_RATE * DEFAULT_FRAME_MS // 1000

    def decode(self, payload, *, max_points: int | None = None) -> np.ndarray:
        """One received packet's frame; CodecError for anything but an opus packet of this
        stream's frame duration (the decoder is unchanged then)."""
        packet, speech = self._packet(payload)
        pcm = self._opus.decode(packet, self._frame)
        self.counts["decoded"] += 1
        self.speech = speech
        return np.clip(pcm, -1.0, 1.0)

    def conceal(self) -> np.ndarray:
        """A frame for one that never arrived: Opus's packet loss concealment."""
        self.counts["concealed"] += 1
        return np.clip(self._opus.decode(None, self._frame), -1.0, 1.0)

    def recover(self, next_payload) -> np.ndarray:
        """The missing frame before ``next_payload``, rebuilt from that packet's in-band FEC
        copy; concealed where it has none. Decode ``next_payload`` itself afterwards."""
        packet, _ = self._packet(next_payload)
        fec = _opus_lib.packet_has_lbrr(packet)
        self.counts["fec" if fec else "concealed"] += 1
        return np.clip(self._opus.decode(packet, self._frame, fec=True), -1.0, 1.0)

    def silence(self) -> np.ndarray:
        """A frame the sender did not send (DTX): concealment, as Opus's own DTX decodes
        it, which carries the background on and fades it out instead of cutting to zero."""
        self.counts["silent"] += 1
        return np.clip(self._opus.decode(None, self._frame), -1.0, 1.0)

    def close(self) -> None:
        self._opus.close()
