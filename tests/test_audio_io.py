"""Audio sources and sinks: files, silence and synthetic speech as microphones, WAV files and
devices as speakers, on real speech clips and real espeak-ng output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from capture import audio
from capture.audio import (
    BLOCK,
    SAMPLE_RATE,
    AudioDeviceError,
    AudioError,
    FileAudioSource,
    MicrophoneSource,
    SilenceSource,
    SpeechSource,
    demo_voices,
    load_audio,
    open_microphone,
)
from render.audio_out import NullSink, SpeakerSink, WavSink, open_speaker, read_wav, write_wav

ROOT = Path(__file__).resolve().parent.parent
BLOCK_S = BLOCK / SAMPLE_RATE
needs_espeak = pytest.mark.skipif(not audio.espeak_available(), reason="espeak-ng not installed (apt-get install "
                                  "espeak-ng)")


@pytest.fixture(scope="module")
def clips(data_dir) -> Path:
    folder = data_dir / "audio"
    if not (folder / "cmu_arctic_us_aew_a0001.wav").is_file():
        pytest.skip(f"no speech clips in {folder}")
    return folder


def _all(source) -> np.ndarray:
    return np.concatenate([b.samples for b in source])


def _tone(n: int, hz: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)


# --- files ---------------------------------------------------------------------------------

def test_file_source_is_the_clip_at_48k_in_20ms_blocks(clips):
    clip = clips / "cmu_arctic_us_aew_a0001.wav"
    pcm, rate = read_wav(clip)
    assert rate == 16_000 and pcm.ndim == 1
    expected = resample_poly(pcm, 3, 1)  # 16 kHz -> 48 kHz
    with FileAudioSource(clip, realtime=False) as source:
        blocks = list(source)
    assert all(b.samples.shape == (BLOCK,) and b.samples.dtype == np.float32 for b in blocks)
    assert [b.index for b in blocks] == [i * BLOCK for i in range(len(blocks))]
    got = np.concatenate([b.samples for b in blocks])
    assert len(blocks) == -(-len(expected) // BLOCK)  # every sample, the last block padded
    n = len(expected)
    assert not got[n:].any()
    lags = np.arange(-5, 6)
    corr = [np.corrcoef(got[5 + lag:n - 5 + lag], expected[5:n - 5])[0, 1] for lag in lags]
    assert lags[int(np.argmax(corr))] == 0  # in step, not shifted
    assert max(corr) > 0.99


def test_stereo_flac_is_mixed_to_mono(clips):
    got = load_audio(clips / "jfk.flac")
    assert got.ndim == 1 and abs(len(got) / SAMPLE_RATE - 11.0) < 0.01
    assert np.sqrt(np.mean(got**2)) > 0.01


def test_realtime_blocks_come_when_spoken(clips):
    start = time.time()
    with FileAudioSource(clips / "cmu_arctic_us_axb_a0005.wav", start=start) as source:
        for i in range(10):
            block = source.read()
            returned = time.time()
            assert block.t == pytest.approx(start + i * BLOCK_S, abs=1e-9)  # exactly 20 ms apart
            assert returned >= block.t + BLOCK_S  # not before its last sample was "spoken"
            assert returned < block.t + BLOCK_S + 0.15  # a loaded machine's oversleep


def test_end_of_file_pads_then_ends(tmp_path):
    n = 5 * BLOCK + 100
    write_wav(tmp_path / "t.wav", _tone(n, 440.0))
    source = FileAudioSource(tmp_path / "t.wav", realtime=False)
    blocks = [source.read() for _ in range(6)]
    assert source.read() is None and source.read() is None
    last = blocks[-1].samples
    assert np.abs(last[:100]).max() > 0.1 and not last[100:].any()
    np.testing.assert_allclose(np.concatenate([b.samples for b in blocks])[:n], _tone(n, 440.0), atol=1e-4)


def test_loop_starts_again_seamlessly(clips):
    clip = clips / "cmu_arctic_us_axb_a0005.wav"
    once = load_audio(clip)
    source = FileAudioSource(clip, realtime=False, loop=True)
    blocks = [source.read() for _ in range(-(-3 * len(once) // BLOCK))]
    got = np.concatenate([b.samples for b in blocks])
    np.testing.assert_array_equal(got[: 3 * len(once)], np.tile(once, 3))
    assert blocks[-1].index == (len(blocks) - 1) * BLOCK


@pytest.mark.parametrize("content", [None, b"", b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 20, b"plain text\n" * 50])
def test_bad_files_raise_audio_error(tmp_path, content):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=r"bad\.wav"):
        FileAudioSource(path)
    with pytest.raises(AudioError):
        load_audio(path)
    with pytest.raises(AudioError):
        read_wav(path)


def test_a_folder_or_an_empty_wav_is_refused(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        FileAudioSource(tmp_path)
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="no audio samples"):
        FileAudioSource(tmp_path / "empty.wav")


def test_wav_header_claiming_gigabytes_reads_what_is_there(tmp_path):
    path = tmp_path / "liar.wav"
    write_wav(path, _tone(480, 440.0))
    raw = bytearray(path.read_bytes())
    raw[40:44] = (0x7FFFFFF0).to_bytes(4, "little")  # the data chunk's length
    path.write_bytes(bytes(raw))
    samples, rate = read_wav(path)
    assert rate == SAMPLE_RATE and len(samples) == 480
    assert len(load_audio(path)) == 480


# --- silence and speech --------------------------------------------------------------------

def test_silence_is_silent_and_ends():
    blocks = list(SilenceSource(0.05, realtime=False))  # 2.5 blocks
    assert len(blocks) == 3 and not np.concatenate([b.samples for b in blocks]).any()
    endless = SilenceSource(realtime=False)
    assert all(endless.read() is not None for _ in range(500))


@needs_espeak
def test_speech_is_speech_with_pauses():
    text, kwargs = demo_voices(1)[0]
    speech = SpeechSource(text, realtime=False, **kwargs)
    samples = _all(speech)
    assert 5.0 < len(samples) / SAMPLE_RATE < 12.0
    rms = np.sqrt(np.mean(samples.reshape(-1, BLOCK) ** 2, axis=1))
    loud = rms > 0.02
    assert loud.mean() > 0.5  # mostly speech...
    inner = np.flatnonzero(loud)
    gaps = ~loud[inner[0]:inner[-1]]
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, gaps.astype(int), 0])))[::2]
    assert (runs >= 10).sum() >= 2  # ...with pauses of 200 ms+ between sentences
    np.testing.assert_array_equal(SpeechSource(text, realtime=False, **kwargs).samples, speech.samples)


def _pitch(x: np.ndarray) -> float:
    """Median fundamental frequency (Hz) of the voiced 40 ms frames, by autocorrelation."""
    frames = x[: len(x) // 1920 * 1920].reshape(-1, 1920)
    lo, hi, found = SAMPLE_RATE // 400, SAMPLE_RATE // 60, []
    for f in frames[np.sqrt((frames**2).mean(axis=1)) > 0.05]:
        ac = np.correlate(f - f.mean(), f - f.mean(), "full")[len(f) - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            found.append(SAMPLE_RATE / lag)
    return float(np.median(found))


@needs_espeak
def test_demo_participants_sound_different():
    voices = demo_voices(10)
    assert len({text for text, _ in voices}) == 10
    assert len({(kw["voice"], kw["pitch"]) for _, kw in voices}) == 10
    text = "The model is on the table."
    low = SpeechSource(text, voice="en-us+m3", pitch=20, realtime=False).samples
    high = SpeechSource(text, voice="en-gb+f2", pitch=80, realtime=False).samples
    assert _pitch(high) > 1.3 * _pitch(low)
    pitches = [_pitch(SpeechSource(text, realtime=False, **kw).samples) for text, kw in voices[:4]]
    assert max(pitches) > 2 * min(pitches)  # deep and high voices round the table


def test_speech_without_espeak_plays_a_real_clip(clips, monkeypatch, caplog):
    monkeypatch.setattr(audio, "espeak_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="capture.audio"):
        speech = SpeechSource("Good morning everyone.", voice="en-us+m3", realtime=False)
    assert "apt-get install espeak-ng" in caplog.text
    assert speech.fallback.parent == clips
    np.testing.assert_array_equal(speech.samples, load_audio(speech.fallback))
    again = SpeechSource("Good morning everyone.", realtime=False)
    assert again.fallback == speech.fallback  # stable: the same text, the same clip
    picked = {SpeechSource(text, realtime=False).fallback for text, _ in demo_voices(8)}
    assert len(picked) > 1


def test_speech_without_espeak_or_clips_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "espeak_available", lambda: False)
    monkeypatch.setenv("HOLOPORT_DATA", str(tmp_path))
    with pytest.raises(AudioError, match=r"apt-get install espeak-ng"):
        SpeechSource("Hello.")


# --- sinks ---------------------------------------------------------------------------------

def test_wav_sink_round_trip(tmp_path):
    n = 50 * BLOCK
    stereo = np.stack([_tone(n, 440.0), -_tone(n, 660.0)], axis=1)
    stereo[:10] = [1.5, -1.5]  # clipped on the way out
    with WavSink(tmp_path / "seat.wav") as sink:
        for i in range(0, n, BLOCK):
            sink.write(stereo[i:i + BLOCK])
        assert sink.frames == n
        with pytest.raises(ValueError, match=r"\(n, 2\)"):
            sink.write(stereo[:, 0])
    got, rate = read_wav(tmp_path / "seat.wav")
    assert rate == SAMPLE_RATE and got.shape == (n, 2)
    np.testing.assert_allclose(got, np.clip(stereo, -1, 1), atol=1.5 / 32767)


def test_wav_sink_of_a_killed_process_is_playable(tmp_path):
    path = tmp_path / "crash.wav"
    script = f"""
import os, signal, numpy as np
from render.audio_out import WavSink
sink = WavSink({str(path)!r})
t = np.arange(960) / 48000
for i in range(75):
    sink.write(np.stack([np.sin(2 * np.pi * 300 * (t + i * 0.02))] * 2, axis=1) * 0.5)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60)
    assert done.returncode == -9  # never closed
    got, rate = read_wav(path)
    assert rate == SAMPLE_RATE and got.shape == (75 * BLOCK, 2)
    expected = 0.5 * np.sin(2 * np.pi * 300 * np.arange(75 * BLOCK) / SAMPLE_RATE)
    np.testing.assert_allclose(got[:, 1], expected, atol=2 / 32767)
    assert len(load_audio(path)) == 75 * BLOCK  # FFmpeg reads it too


def test_write_and_read_wav_mono(tmp_path):
    x = _tone(1000, 1000.0, 16_000)
    write_wav(tmp_path / "m.wav", x, 16_000)
    got, rate = read_wav(tmp_path / "m.wav")
    assert rate == 16_000 and got.shape == (1000,)
    np.testing.assert_allclose(got, x, atol=1 / 32767)


def test_null_sink_counts():
    with NullSink() as sink:
        sink.write(np.zeros((BLOCK, 2), np.float32))
    assert sink.frames == BLOCK


# --- devices -------------------------------------------------------------------------------

def test_open_microphone_with_a_file_loops_it(clips):
    mic = open_microphone(str(clips / "cmu_arctic_us_axb_a0005.wav"), realtime=False)
    assert isinstance(mic, FileAudioSource) and mic.loop
    assert all(mic.read() is not None for _ in range(200))  # 4 s of a 1.6 s clip
    with pytest.raises(AudioDeviceError, match="no such audio file"):
        open_microphone(str(clips / "missing.wav"))


def _no_default_device(kind: str) -> None:
    sd = pytest.importorskip("sounddevice", reason="sounddevice / PortAudio not installed")
    try:
        sd.query_devices(kind=kind)
    except (ValueError, sd.PortAudioError):
        return
    pytest.skip(f"this machine has a default {kind} device")


def test_no_microphone_is_a_clear_error():
    _no_default_device("input")
    with pytest.raises(AudioDeviceError, match="no microphone.*join without audio"):
        open_microphone(None)
    with pytest.raises(AudioDeviceError, match="no microphone"):
        open_microphone("7")


def test_no_speaker_is_a_clear_error():
    _no_default_device("output")
    with pytest.raises(AudioDeviceError, match="no speaker"):
        open_speaker(None)


def test_without_sounddevice_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    with pytest.raises(AudioDeviceError, match=r"pip install holoport\[audio\].*libportaudio2"):
        open_microphone(None)
    with pytest.raises(AudioDeviceError, match=r"pip install holoport\[audio\]"):
        open_speaker("1")


class _FakeStream:
    latency = 0.01

    def __init__(self, **kwargs):
        self.kwargs, self.written = kwargs, []

    def start(self):
        pass

    def stop(self):
        pass

    def close(self):
        pass

    def write(self, data):
        self.written.append(data.copy())
        return False


@pytest.fixture
def fake_sounddevice(monkeypatch):
    """PortAudio as sounddevice presents it, with one device of each kind: what the source and
    sink do with the stream's callbacks and clocks, without a sound card."""
    sd = types.SimpleNamespace(PortAudioError=type("PortAudioError", (Exception,), {}),
                               InputStream=_FakeStream, OutputStream=_FakeStream)
    sd.query_devices = lambda device=None, kind=None: {"name": "fake", "max_input_channels": 1,
                                                       "max_output_channels": 2}
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    return sd


def test_microphone_stamps_blocks_with_the_capture_clock(fake_sounddevice):
    mic = open_microphone("0")
    assert isinstance(mic, MicrophoneSource) and mic._stream.kwargs["device"] == 0
    x = _tone(3 * BLOCK, 440.0)
    # the card captured the first block 30 ms before the callback ran
    clock = types.SimpleNamespace(inputBufferAdcTime=100.0, currentTime=100.03)
    before = time.time()
    mic._callback(x[:BLOCK, None], BLOCK, clock, None)
    after = time.time()
    # a host with no stream clock: the block ended as it arrived
    mic._callback(x[BLOCK:2 * BLOCK, None], BLOCK, types.SimpleNamespace(inputBufferAdcTime=0.0,
                                                                         currentTime=0.0), None)
    arrived = time.time()
    first, second = mic.read(), mic.read()
    assert before - 0.03 <= first.t <= after - 0.03
    assert second.t <= arrived - BLOCK_S and second.t > arrived - BLOCK_S - 1.0
    np.testing.assert_array_equal(np.r_[first.samples, second.samples], x[:2 * BLOCK])
    assert (first.index, second.index) == (0, BLOCK)
    for _ in range(MicrophoneSource.QUEUE_BLOCKS + 5):  # a reader that fell behind
        mic._callback(x[:BLOCK, None], BLOCK, clock, None)
    assert mic.dropped == 5 and mic._queue.qsize() == MicrophoneSource.QUEUE_BLOCKS
    mic.close()


def test_speaker_gets_clipped_stereo(fake_sounddevice):
    speaker = open_speaker(None)
    assert isinstance(speaker, SpeakerSink)
    speaker.write(np.full((BLOCK, 2), 2.0, np.float32))
    assert speaker._stream.kwargs["channels"] == 2 and speaker._stream.written[0].max() == 1.0
    speaker.close()


@pytest.mark.skipif(not os.environ.get("HOLOPORT_AUDIO_DEVICE"), reason="set HOLOPORT_AUDIO_DEVICE=1 on a machine "
                    "with a microphone to test the live device")
def test_live_microphone_delivers_blocks_on_time():
    with open_microphone(None) as mic:
        blocks = [mic.read() for _ in range(25)]
    assert all(b.samples.shape == (BLOCK,) for b in blocks)
    assert all(abs(b.t - time.time()) < 2.0 for b in blocks)
