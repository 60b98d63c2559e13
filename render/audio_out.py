"""Where the room's sound goes: speakers, a WAV file, nowhere.

Every sink takes what the spatial mixer makes: stereo float32 at 48 kHz, shape ``(n, 2)``,
in [-1, 1] (clipped on the way out). ``WavSink`` keeps its file playable at every moment (the
header is rewritten and the file flushed on each write), so a seat's recording survives a
crash of the process writing it. ``write_wav``/``read_wav`` are the one-shot helpers.
"""

from __future__ import annotations

import contextlib
import os
import wave
from pathlib import Path
from typing import Any

import numpy as np

from capture.audio import (
    SAMPLE_RATE,
    AudioDeviceError,
    AudioError,
    device_spec,
    import_sounddevice,
    query_device,
)


def _stereo(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, np.float32)
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"a sink takes stereo samples of shape (n, 2), not {samples.shape}")
    return samples


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class AudioSink:
    """Stereo 48 kHz out. ``frames`` counts what was written."""

    name = "sink"

    def __init__(self) -> None:
        self.frames = 0

    def write(self, stereo: np.ndarray) -> None:
        stereo = _stereo(stereo)
        self._write(stereo)
        self.frames += len(stereo)

    def _write(self, stereo: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> AudioSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullSink(AudioSink):
    """Sound to nowhere: a muted seat, a headless participant, a benchmark that only counts."""

    name = "null"

    def _write(self, stereo: np.ndarray) -> None:
        pass


class WavSink(AudioSink):
    """16-bit stereo WAV written as it plays; playable up to the last write even if never closed."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = f"wav:{self.path.name}"
        self._file = open(self.path, "wb")  # noqa: SIM115 (open for the sink's life)
        self._wav = wave.Wave_write(self._file)
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)
        self._wav.writeframes(b"")  # the header now: an empty file is a valid WAV too
        self._file.flush()

    def _write(self, stereo: np.ndarray) -> None:
        if self._wav is None:
            raise ValueError(f"{self.name} is closed")
        self._wav.writeframes(_pcm16(stereo))  # rewrites the header's lengths too
        self._file.flush()

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._file.close()
            self._wav = None


class SpeakerSink(AudioSink):
    """Speakers or headphones through PortAudio. ``write`` blocks while the device's buffer is
    full, so it paces a producer at the device's own clock; ``latency`` is that buffer (s)."""

    def __init__(self, device: str | int | None = None) -> None:
        super().__init__()
        sd = import_sounddevice()
        device = device_spec(device)
        info = query_device(sd, device, "output")
        self.name = f"speaker:{info.get('name', device)}"
        try:
            self._stream = sd.OutputStream(samplerate=SAMPLE_RATE, device=device, channels=2, dtype="float32",
                                           latency="low")
            self._stream.start()
        except (ValueError, sd.PortAudioError) as e:
            raise AudioDeviceError(f"cannot open speaker {self.name} at {SAMPLE_RATE} Hz stereo: {e}") from e
        self.latency = float(self._stream.latency)
        self.underflows = 0  # writes after the device had run dry (a gap was heard)

    def _write(self, stereo: np.ndarray) -> None:
        if self._stream is None:
            raise ValueError(f"{self.name} is closed")
        underflowed = self._stream.write(np.ascontiguousarray(np.clip(stereo, -1.0, 1.0)))
        self.underflows += bool(underflowed)

    def close(self) -> None:
        stream, self._stream = getattr(self, "_stream", None), None
        if stream is not None:
            with contextlib.suppress(Exception):  # a device already gone: nothing left to stop
                stream.stop()  # plays what is buffered first
                stream.close()


def open_speaker(spec: str | None) -> AudioSink:
    """The sink ``holoport join --speaker [DEVICE]`` means: a device by number or name, or
    (None) the default output. AudioDeviceError when there is none: the caller plays nothing."""
    return SpeakerSink(device_spec(spec))


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """float samples in [-1, 1], shape (n,) or (n, channels), as a 16-bit PCM WAV."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2 or samples.shape[1] < 1:
        raise ValueError(f"samples must be (n,) or (n, channels), not {samples.shape}")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(_pcm16(samples))


_PCM_DTYPES: dict[int, Any] = {1: np.uint8, 2: "<i2", 4: "<i4"}  # sample width (bytes): samples


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV as float32 in [-1, 1]: shape (n,) for mono, (n, channels) otherwise, and its
    rate. For any other format at the pipeline's rate, ``capture.audio.load_audio``."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            if width not in _PCM_DTYPES:
                raise AudioError(f"{path}: {8 * width}-bit WAV; capture.audio.load_audio reads any format")
            # no more than the file can hold, whatever its header claims
            n = min(w.getnframes(), os.path.getsize(path) // (channels * width))
            raw = w.readframes(n)
    except (OSError, EOFError, wave.Error) as e:
        raise AudioError(f"cannot read WAV file {path}: {e}") from e
    data = np.frombuffer(raw[: len(raw) // (channels * width) * channels * width], _PCM_DTYPES[width])
    if width == 1:  # 8-bit WAV is unsigned
        samples = (data.astype(np.float32) - 128.0) / 128.0
    else:
        samples = data.astype(np.float32) / float(2 ** (8 * width - 1))
    return (samples if channels == 1 else samples.reshape(-1, channels)), rate
