"""The one interface every audio source has: microphones, files, recordings, speech, silence.

Voice runs at one rate and one block size everywhere (``SAMPLE_RATE``, ``BLOCK``: Opus's
48 kHz and 20 ms frames), so a source converts once, at the edge, and nothing downstream
resamples. ``read()`` gives the next :class:`AudioBlock` (mono float32 in [-1, 1]) or None
at the end; with ``realtime`` it returns a block only once its last sample would have
been spoken, as a microphone does, so a file played as a microphone has a microphone's
timing. ``AudioBlock.t`` is the local wall-clock time (``time.time()``) of the block's
first sample: the capture clock that hologram frames are stamped on too, which is what
lip sync lines up.

A subclass implements ``_next_samples(n)`` (up to ``n`` samples, an empty array at the end).
Here: ``FileAudioSource`` (any file FFmpeg decodes), ``ArraySource``, ``SilenceSource``,
``SpeechSource`` (espeak-ng; ``demo_voices`` gives each demo participant a voice) and the
live ``MicrophoneSource`` (PortAudio through the optional ``sounddevice``), which stamps
blocks with the sound card's capture time instead; ``open_microphone`` reads ``--mic``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 48_000  # Hz: Opus's native rate
BLOCK_MS = 20
BLOCK = SAMPLE_RATE * BLOCK_MS // 1000  # samples per block (960)
SKIP_LATE_S = 0.2  # a realtime reader this late skips blocks instead of sending stale speech

log = logging.getLogger(__name__)


@dataclass
class AudioBlock:
    samples: np.ndarray  # float32, shape (BLOCK,), mono, in [-1, 1]
    t: float  # local wall-clock time of the first sample (time.time())
    index: int  # the first sample's number since the source started


class AudioSource:
    """Mono 48 kHz blocks of 20 ms. ``realtime``: paced like a live microphone."""

    name = "audio"

    def __init__(self, realtime: bool = True, start: float | None = None) -> None:
        self.realtime = realtime
        self._start = start  # wall time of sample 0 (None: the first read)
        self._index = 0
        self._pending = np.zeros(0, np.float32)
        self.skipped = 0  # blocks a late realtime reader skipped

    def _next_samples(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def read(self) -> AudioBlock | None:
        """The next 20 ms block; with ``realtime``, once its last sample is due. A short
        final block is padded with silence; None after the end. A realtime reader that
        fell more than ``SKIP_LATE_S`` behind skips what it missed, as a microphone's
        driver would: old speech sent late is worse than speech lost."""
        while True:
            block = self._read_one()
            if block is None or not self.realtime or time.time() - block.t < BLOCK / SAMPLE_RATE + SKIP_LATE_S:
                return block
            self.skipped += 1

    def _read_one(self) -> AudioBlock | None:
        parts, have = [self._pending], len(self._pending)
        while have < BLOCK:
            more = np.asarray(self._next_samples(BLOCK - have), np.float32)
            if more.size == 0:
                break
            parts.append(more)
            have += more.size
        samples = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if samples.size == 0:
            return None
        self._pending = samples[BLOCK:]
        samples = samples[:BLOCK]
        if samples.size < BLOCK:
            samples = np.pad(samples, (0, BLOCK - samples.size))
        if self._start is None:
            self._start = time.time()
        t = self._start + self._index / SAMPLE_RATE
        if self.realtime:
            wait = t + BLOCK / SAMPLE_RATE - time.time()
            if wait > 0:
                time.sleep(wait)
        block = AudioBlock(np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False), t, self._index)
        self._index += BLOCK
        return block

    def __iter__(self) -> Iterator[AudioBlock]:
        while (block := self.read()) is not None:
            yield block

    def close(self) -> None:
        pass

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- sources -----------------------------------------------------------------------------

#: What to install for live devices (sounddevice is an optional extra; PortAudio is Debian's).
DEVICE_HINT = "pip install holoport[audio] and apt-get install libportaudio2"
#: Longest file ``load_audio`` takes whole: a bad or huge file must not eat the memory.
MAX_LOAD_SECONDS = 600.0
#: The speech clips a SpeechSource falls back to without espeak-ng (under data_root()).
FALLBACK_DIR = "audio"
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".aiff", ".aif", ".webm", ".mka")


class AudioError(ValueError):
    """A file that is missing or will not decode, or speech that cannot be made: said plainly."""


class AudioDeviceError(AudioError):
    """No microphone or speaker (or no PortAudio): the caller goes on without audio."""


def _decode(path: Path) -> Iterator[np.ndarray]:
    """Chunks of ``path``'s first audio stream as 48 kHz mono float32, decoded as read.

    FFmpeg's resampler converts any rate and layout once, at the edge, so every source
    downstream sees the one format; decoding as we go keeps a long file's memory flat.
    """
    import av  # PyAV: only sources that decode files need it

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise AudioError(f"cannot open audio file {path}: {e}") from e
    try:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.error.FFmpegError as e:
            raise AudioError(f"cannot decode audio file {path}: {e}") from e
    finally:
        container.close()


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():  # also refuses FIFOs and devices, which would block the decoder
        raise AudioError(f"no such audio file: {path}")
    return path


def load_audio(path: str | Path, max_seconds: float = MAX_LOAD_SECONDS) -> np.ndarray:
    """A whole file as 48 kHz mono float32 (any format FFmpeg reads); AudioError past
    ``max_seconds``, so an untrusted file cannot claim unbounded memory."""
    path, chunks, have = _check_file(path), [], 0
    for chunk in _decode(path):
        chunks.append(chunk)
        have += chunk.size
        if have > max_seconds * SAMPLE_RATE:
            raise AudioError(f"{path} is longer than {max_seconds:g} s")
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class FileAudioSource(AudioSource):
    """A WAV/FLAC/... file played as a microphone: decoded as it plays, ``loop`` from the top."""

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False,
                 start: float | None = None) -> None:
        super().__init__(realtime, start)
        self.path = _check_file(path)
        self.loop = loop
        self.name = f"file:{self.path.name}"
        self._chunks = _decode(self.path)
        self._buffer = next(self._chunks, None)  # decode now: a bad file fails here, not mid-meeting
        if self._buffer is None:
            raise AudioError(f"{self.path} holds no audio samples")

    def _next_samples(self, n: int) -> np.ndarray:
        while self._buffer is None or self._buffer.size == 0:
            self._buffer = next(self._chunks, None)
            if self._buffer is None:
                if not self.loop:
                    return np.zeros(0, np.float32)
                self._chunks = _decode(self.path)  # not empty: the constructor saw samples
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def close(self) -> None:
        self._chunks.close()  # closes the container


class ArraySource(AudioSource):
    """Samples already in memory (48 kHz mono), e.g. synthesised speech; ``samples`` is what
    it says, the reference a benchmark compares the received voice with."""

    def __init__(self, samples: np.ndarray, realtime: bool = True, loop: bool = False,
                 start: float | None = None, name: str = "array") -> None:
        super().__init__(realtime, start)
        self.samples = np.asarray(samples, np.float32).reshape(-1)
        self.loop = loop and self.samples.size > 0
        self.name = name
        self._pos = 0

    def _next_samples(self, n: int) -> np.ndarray:
        if self._pos >= self.samples.size and self.loop:
            self._pos = 0
        out = self.samples[self._pos:self._pos + n]
        self._pos += out.size
        return out


class SilenceSource(AudioSource):
    """Silence for ``seconds`` (None: for ever): a muted or absent microphone that keeps time."""

    name = "silence"

    def __init__(self, seconds: float | None = None, realtime: bool = True, start: float | None = None) -> None:
        super().__init__(realtime, start)
        self._left = None if seconds is None else round(seconds * SAMPLE_RATE)

    def _next_samples(self, n: int) -> np.ndarray:
        if self._left is not None:
            n = min(n, self._left)
            self._left -= n
        return np.zeros(n, np.float32)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str = "en-us", pitch: int | None = None, speed: int | None = None) -> np.ndarray:
    """``text`` spoken by espeak-ng as 48 kHz mono float32 (AudioError when it cannot)."""
    with tempfile.TemporaryDirectory(prefix="holoport-speech-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = ["espeak-ng", "-w", str(wav), "-v", voice]
        if pitch is not None:
            cmd += ["-p", str(int(pitch))]
        if speed is not None:
            cmd += ["-s", str(int(speed))]
        cmd += ["--", text]  # "--": a line starting with "-" is spoken, not parsed as an option
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AudioError(f"espeak-ng failed: {e}") from e
        if done.returncode != 0 or not wav.is_file():
            raise AudioError(f"espeak-ng failed (voice {voice!r}): {done.stderr.strip() or done.returncode}")
        return load_audio(wav)


def fallback_clip(text: str) -> Path:
    """The real speech clip a text is played as without espeak-ng: chosen by a stable hash
    of the text, so a participant keeps one voice from run to run."""
    from holoport.data import data_root

    folder = data_root() / FALLBACK_DIR
    clips = sorted(p for p in folder.glob("*") if p.suffix.lower() in _AUDIO_SUFFIXES) if folder.is_dir() else []
    if not clips:
        raise AudioError(f"synthetic speech needs espeak-ng (apt-get install espeak-ng), or speech clips in "
                         f"{folder} (set HOLOPORT_DATA)")
    return clips[zlib.crc32(text.encode()) % len(clips)]


class SpeechSource(ArraySource):
    """Synthetic speech for the demo and the tests: ``text`` in an espeak-ng ``voice``
    (``en-us+m3``, ``en-gb+f2``...; ``pitch`` 0-99, ``speed`` in words per minute).

    Without espeak-ng it says so and plays one of the shared data's real speech clips instead.
    """

    def __init__(self, text: str, voice: str = "en-us", realtime: bool = True, pitch: int | None = None,
                 speed: int | None = None, loop: bool = False, start: float | None = None) -> None:
        self.text, self.voice = text, voice
        if espeak_available():
            samples, self.fallback = synthesize(text, voice, pitch, speed), None
        else:
            self.fallback = fallback_clip(text)
            log.warning("espeak-ng is not installed (apt-get install espeak-ng): playing the speech clip %s "
                        "instead of synthesising %r", self.fallback.name, text[:40])
            samples = load_audio(self.fallback)
        super().__init__(samples, realtime, loop, start, name=f"speech:{voice}")


# Each demo participant: a voice of its own and lines of its own, sentences apart by
# espeak's own pause (~0.4 s) so voice activity switches on and off as people's does.
_DEMO_VOICES: tuple[tuple[str, dict], ...] = (
    ("Good morning everyone. Can you all hear me? Let's start with the design review. "
     "I put the first model on the table.", {"voice": "en-us+m3", "pitch": 40, "speed": 160}),
    ("Hello! Yes, I can hear you clearly. The new model is on the table now. "
     "Take a look at the left side.", {"voice": "en-gb+f2", "pitch": 75, "speed": 165}),
    ("I see it. The colours look right to me. What about the scale? "
     "It seems a little small from where I sit.", {"voice": "en-us+f4", "pitch": 70, "speed": 150}),
    ("The scale is one to one. I measured it this morning. "
     "We can walk around it together, if you like.", {"voice": "en-gb-scotland+m1", "pitch": 30, "speed": 155}),
    ("Sorry, I joined a little late. Could somebody share the notes? "
     "Thank you. I will read them now.", {"voice": "en-us+m7", "pitch": 50, "speed": 170}),
    ("Welcome! We are looking at the second version. The network seems fine today. "
     "Everybody is in sync.", {"voice": "en-gb-x-rp+f3", "pitch": 65, "speed": 160}),
    ("One question about the lighting. Is it from the room or from the model? "
     "It looks very natural.", {"voice": "en-029+m2", "pitch": 45, "speed": 150}),
    ("Let's take a short break. We meet again in ten minutes. "
     "Bring your ideas, and some coffee.", {"voice": "en-us+f1", "pitch": 55, "speed": 165}),
)


def demo_voices(n: int) -> list[tuple[str, dict]]:
    """``n`` (text, SpeechSource keyword arguments) pairs, each a different voice saying
    different lines (about 6-10 s each); past the eight written ones, pitch and lines vary."""
    out = []
    for i in range(n):
        text, kwargs = _DEMO_VOICES[i % len(_DEMO_VOICES)]
        if i >= len(_DEMO_VOICES):
            lap = i // len(_DEMO_VOICES)
            text = f"This is participant {i + 1}. {text}"
            kwargs = {**kwargs, "pitch": (kwargs["pitch"] + 17 * lap) % 100}
        out.append((text, dict(kwargs)))
    return out


# --- live devices --------------------------------------------------------------------------

def import_sounddevice() -> Any:
    """sounddevice, imported only when a live device is used (``import capture.audio`` must not need it)."""
    try:
        import sounddevice
    except ImportError as e:  # not installed
        raise AudioDeviceError(f"live audio needs the sounddevice package: {DEVICE_HINT}") from e
    except OSError as e:  # installed, but PortAudio's library is missing
        raise AudioDeviceError(f"live audio needs PortAudio ({e}): {DEVICE_HINT}") from e
    return sounddevice


def default_devices() -> tuple[str | None, str | None]:
    """Why there is no default microphone, and why no default speaker (None: there is one),
    without opening either: a participant with neither does not start its voice at all."""
    reasons: list[str | None] = []
    for kind in ("input", "output"):
        try:
            query_device(import_sounddevice(), None, kind)
            reasons.append(None)
        except AudioDeviceError as exc:
            reasons.append(str(exc))
    return reasons[0], reasons[1]


def device_spec(spec: str | int | None) -> str | int | None:
    """A device as the command line names it: its number, its name, or None (the default)."""
    if isinstance(spec, str) and spec.strip().lstrip("-").isdigit():
        return int(spec)
    return spec


def query_device(sd: Any, device: str | int | None, kind: str) -> dict:
    """PortAudio's description of an input or output device; AudioDeviceError when there is none."""
    what = "microphone" if kind == "input" else "speaker"
    try:
        info = sd.query_devices(device, kind=kind)
    except (ValueError, sd.PortAudioError) as e:
        found = "default" if device is None else repr(device)
        raise AudioDeviceError(f"no {what} ({found} {kind} device: {e}); connect one, choose another "
                               f"(python -m sounddevice lists them), or join without audio") from e
    if info.get("max_" + ("input" if kind == "input" else "output") + "_channels", 0) < 1:
        raise AudioDeviceError(f"{info.get('name', device)!r} is not a {what}")
    return info


class MicrophoneSource(AudioSource):
    """A live microphone through PortAudio: 20 ms blocks stamped with the sound card's own
    capture time (its ADC clock mapped to ``time.time()``), so lip sync sees when the voice
    was spoken, not when Python got round to it. Live by nature: ``read()`` waits for the
    next block and never paces again.
    """

    #: Blocks held for a slow reader (1 s); older ones are dropped so delay cannot grow.
    QUEUE_BLOCKS = 50
    #: A device that sends nothing for this long is gone.
    STALL_S = 2.0

    def __init__(self, device: str | int | None = None) -> None:
        super().__init__(realtime=True)
        sd = import_sounddevice()
        device = device_spec(device)
        info = query_device(sd, device, "input")
        self.name = f"mic:{info.get('name', device)}"
        self.dropped = 0  # blocks dropped because read() fell behind
        self.overflows = 0  # blocks PortAudio flagged (input overflow: samples lost)
        self._queue: queue.Queue[tuple[np.ndarray, float]] = queue.Queue(self.QUEUE_BLOCKS)
        self._parts: list[np.ndarray] = []
        self._have = 0
        self._t = 0.0
        try:
            self._stream = sd.InputStream(samplerate=SAMPLE_RATE, blocksize=BLOCK, device=device, channels=1,
                                          dtype="float32", latency="low", callback=self._callback)
            self._stream.start()
        except (ValueError, sd.PortAudioError) as e:
            raise AudioDeviceError(f"cannot open microphone {self.name} at {SAMPLE_RATE} Hz mono: {e}") from e
        self.latency = float(self._stream.latency)  # the device's own input buffering, seconds

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now = time.time()
        adc = getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0
        current = getattr(time_info, "currentTime", 0.0) or 0.0
        # The stream clock says how long ago the first sample was captured; without one, the
        # block ended on arrival.
        age = current - adc if adc > 0 and 0 <= current - adc < 1.0 else frames / SAMPLE_RATE
        if status:
            self.overflows += 1
        item = (np.array(indata[:, 0], np.float32), now - age)
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self.dropped += 1

    def read(self) -> AudioBlock | None:
        while self._have < BLOCK:
            try:
                chunk, t = self._queue.get(timeout=self.STALL_S)
            except queue.Empty:
                raise AudioDeviceError(f"microphone {self.name} sent nothing for {self.STALL_S:g} s") from None
            if self._have == 0:
                self._t = t
            self._parts.append(chunk)
            self._have += chunk.size
        samples = np.concatenate(self._parts)
        block = AudioBlock(np.clip(samples[:BLOCK], -1.0, 1.0), self._t, self._index)
        rest = samples[BLOCK:]
        self._parts, self._have = ([rest] if rest.size else []), rest.size
        self._t += BLOCK / SAMPLE_RATE
        self._index += BLOCK
        return block

    def close(self) -> None:
        stream, self._stream = getattr(self, "_stream", None), None
        if stream is not None:
            with contextlib.suppress(Exception):  # a device already gone: nothing left to stop
                stream.stop()
                stream.close()


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or Path(spec).suffix.lower() in _AUDIO_SUFFIXES


def open_microphone(spec: str | None, realtime: bool = True) -> AudioSource:
    """The source ``holoport join --mic [DEVICE|FILE]`` means: a file played as a microphone
    (looping; a Holoport recording plays its audio track), a device by number or name, or
    (None) the default input device.
    AudioDeviceError when there is none: the caller joins without a microphone."""
    if spec is not None and Path(spec).is_file():
        from capture.recording import RecordingAudioSource, is_recording  # it builds on this module

        if is_recording(spec):  # a Holoport recording's audio track
            try:
                return RecordingAudioSource(spec, realtime=realtime, loop=True)
            except ValueError as exc:
                raise AudioDeviceError(str(exc)) from None
        return FileAudioSource(spec, realtime=realtime, loop=True)
    if spec is not None and _looks_like_path(spec):
        raise AudioDeviceError(f"no such audio file: {spec}")
    return MicrophoneSource(device_spec(spec))
