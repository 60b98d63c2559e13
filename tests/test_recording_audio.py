"""Sound in recordings and rendered videos: `holoport record --mic` keeps a microphone's
blocks on the frames' clock, damage costs only the records it touches, players line sound
up with frames, and `holoport render` muxes the voices, spatialised, into the MP4."""

from __future__ import annotations

import json
import struct
import subprocess

import numpy as np
import pytest

from capture import SyntheticCamera
from capture.audio import BLOCK, SAMPLE_RATE, load_audio
from capture.recording import (
    _REC,
    AUDIO,
    MAX_AUDIO_SAMPLES,
    RECORD,
    Recording,
    RecordingAudioSource,
    RecordingPlayer,
    RecordingWriter,
)
from tests.conftest import ROOT, holoport_cmd

FRAMES, FPS = 20, 15


@pytest.fixture(scope="module")
def clip(data_dir):
    path = data_dir / "audio" / "cmu_arctic_us_aew_a0001.wav"
    if not path.is_file():
        pytest.skip(f"no speech clip at {path}")
    return path


@pytest.fixture(scope="module")
def voiced(tmp_path_factory, clip):
    """A real `holoport record` of the synthetic person with a speech file as microphone."""
    path = tmp_path_factory.mktemp("voiced") / "ana.hprec"
    made = subprocess.run(holoport_cmd("record", str(path), "--frames", str(FRAMES), "--fps", str(FPS),
                                       "--mic", str(clip)), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "s of sound from file:" in made.stdout, made.stdout
    return path


def _records(data: bytes) -> list[tuple[int, int, int]]:
    """(start, end, kind) of every record, read from the format itself."""
    (n,) = struct.unpack_from("<I", data, 8)
    at, out = 8 + 4 + n + 4, []
    while data[at:at + 4] == RECORD:
        _, kind, hn, pn = _REC.unpack_from(data, at)
        out.append((at, at + _REC.size + hn + pn + 4, kind))
        at = out[-1][1]
    return out


def _lag(a: np.ndarray, b: np.ndarray, most: int) -> int:
    """By how many samples ``a`` is late against ``b`` (cross-correlation peak)."""
    x = np.correlate(a, b[most:len(b) - most], "valid")
    return int(np.argmax(x)) - most


def _window(track: np.ndarray, at: int) -> np.ndarray:
    """One block of ``track`` from sample ``at``, silence outside it."""
    out = np.zeros(BLOCK, np.float32)
    lo, hi = max(at, 0), min(at + BLOCK, len(track))
    if lo < hi:
        out[lo - at:hi - at] = track[lo:hi]
    return out


# -- recording ----------------------------------------------------------------------------

def test_record_keeps_the_microphone_on_the_frames_clock(voiced, clip):
    with Recording(voiced) as rec:
        assert len(rec) == FRAMES and rec.indexed and rec.audio_count > 0 and not rec.damaged
        assert rec.meta["audio"] == f"file:{clip.name}"
        track, t0 = rec.audio_track()
        times = rec.timestamps
    spoken = load_audio(clip)
    n = min(len(spoken), len(track))
    assert n > SAMPLE_RATE  # over a second of it
    # sample for sample the clip, from its first sample on (16-bit PCM costs nothing audible)
    assert np.corrcoef(track[:n], spoken[:n])[0, 1] > 0.999
    # the sound starts with the first frame, on its time base, and lasts through the last frame's period
    assert abs(t0 - times[0]) < BLOCK / SAMPLE_RATE
    assert t0 + len(track) / SAMPLE_RATE >= times[-1] + 1 / FPS - BLOCK / SAMPLE_RATE


def test_a_recording_without_sound_reads_as_before(tmp_path):
    path = tmp_path / "mute.hprec"
    with RecordingWriter(path) as w:
        w.write_rgbd(SyntheticCamera().read(t=0.0))
    data = path.read_bytes()
    index_at = struct.unpack("<Q", data[-8:])[0]
    head = json.loads(data[index_at + _REC.size:index_at + _REC.size + _REC.unpack_from(data, index_at)[2]])
    assert head == {"frames": 1}  # the index as it was before sound existed
    with Recording(path) as rec:
        assert rec.audio_count == 0 and rec.audio_track() is None and len(rec) == 1
    with pytest.raises(ValueError, match="no audio"):
        RecordingAudioSource(path)


def test_the_writer_checks_sound_and_splits_long_stretches(tmp_path):
    path = tmp_path / "long.hprec"
    tone = (0.5 * np.sin(np.arange(MAX_AUDIO_SAMPLES + 5000) * 0.01)).astype(np.float32)
    with RecordingWriter(path) as w:
        with pytest.raises(ValueError, match="mono"):
            w.write_audio(np.zeros((BLOCK, 2), np.float32), 0.0)
        with pytest.raises(ValueError, match="finite"):
            w.write_audio(np.zeros(BLOCK, np.float32), float("nan"))
        w.write_audio(tone, 3.0)
    with Recording(path) as rec:
        assert len(rec) == 0 and rec.audio_count == 2 and rec.indexed
        track, t0 = rec.audio_track()
    assert t0 == 3.0 and len(track) == len(tone) and np.abs(track - tone).max() < 1 / 32767


@pytest.mark.parametrize("live", [True, False])
def test_the_mic_recorder_puts_sound_on_the_frames_time_base(tmp_path, live):
    """A live device's stamps are kept and what it heard before the first frame is dropped;
    a file played as a microphone starts with the first frame, whenever its thread began."""
    from capture.audio import ArraySource
    from capture.recording import MicRecorder

    tone = (0.5 * np.sin(np.arange(SAMPLE_RATE // 2) * 0.03)).astype(np.float32)
    epoch = 1_000_000.0  # the wall-clock time of the frames' time 0
    path = tmp_path / "mic.hprec"
    with RecordingWriter(path) as w:
        recorder = MicRecorder(ArraySource(tone, realtime=False, start=epoch - 0.05), epoch, live=live).start()
        recorder.stop(w, until=0.44)
    with Recording(path) as rec:
        track, t0 = rec.audio_track()
    assert t0 == pytest.approx(0.0, abs=1e-9)
    kept = tone[round(0.05 * SAMPLE_RATE):] if live else tone
    assert len(track) >= len(kept) - BLOCK and np.abs(track - kept[:len(track)]).max() < 1 / 32767


def test_a_recording_cut_off_mid_audio_record_plays_up_to_its_last_complete_record(voiced, tmp_path):
    data = voiced.read_bytes()
    with Recording(voiced) as rec:
        full, t0 = rec.audio_track()
    records = _records(data)
    sound = [r for r in records if r[2] == AUDIO]
    at, end, _ = sound[len(sound) // 2]
    cut = at + (end - at) // 2
    cut_file = tmp_path / "cut.hprec"
    cut_file.write_bytes(data[:cut])
    frames_before = sum(1 for a, e, k in records if e <= cut and k != AUDIO)
    with Recording(cut_file) as rec:
        assert not rec.indexed and len(rec) == frames_before and rec.audio_count == len(sound) // 2
        track, first = rec.audio_track()
        assert first == t0 and len(track) > 0 and np.array_equal(track, full[:len(track)])
        kept = sum(r.samples.size for r in rec.audio_records())
        assert len(track) == kept
        assert "end of the file" in str(rec.damaged[-1])
    player = RecordingPlayer(cut_file, realtime=False, loop=False)
    played = 0
    while player.read() is not None:
        played += 1
    player.close()
    assert played == frames_before


@pytest.mark.parametrize("indexed", [True, False])
def test_a_damaged_audio_record_is_skipped_and_reported(voiced, tmp_path, indexed):
    data = bytearray(voiced.read_bytes())
    sound = [r for r in _records(bytes(data)) if r[2] == AUDIO]
    j = len(sound) // 3
    with Recording(voiced) as rec:
        full, t0 = rec.audio_track()
        lost = rec.audio_record(j)
    at, end, _ = sound[j]
    data[end - 40] ^= 0x55  # in its payload: the CRC no longer holds
    bad = tmp_path / "bad.hprec"
    bad.write_bytes(bytes(data) if indexed else bytes(data[:-12]))  # without the trailer the reader scans
    with Recording(bad) as rec:
        assert rec.indexed == indexed
        assert len(list(rec)) == FRAMES and rec.lost == []  # every frame still plays
        track, first = rec.audio_track()
        assert rec.lost_audio == [j] and "1 damaged audio record skipped" in rec.damage_summary()
        assert any(d.audio == (j,) for d in rec.damaged)
    assert first == t0 and len(track) == len(full)
    # silence exactly where the lost record was; every other sample as recorded
    lo = round((lost.t - t0) * SAMPLE_RATE)
    hi = lo + lost.samples.size
    assert not track[lo:hi].any() and full[lo:hi].any()
    assert np.array_equal(track[:lo], full[:lo]) and np.array_equal(track[hi:], full[hi:])


def test_sound_a_head_misdescribes_is_refused_by_name(tmp_path):
    """Records that check out (their CRC holds) but claim 44.1 kHz, or more samples than they
    carry: each is reported damaged and is silence in the track; the others play."""
    path = tmp_path / "forged.hprec"
    block = (0.25 * np.ones(BLOCK)).astype(np.float32)
    pcm = (block * 32767).round().astype("<i2").tobytes()
    with RecordingWriter(path) as w:
        w.write_audio(block, 0.0)
        w._audio.append((w._record(AUDIO, {"audio": 1, "t": 0.02, "samples": BLOCK, "rate": 44100}, pcm), 0.02))
        w._audio.append((w._record(AUDIO, {"audio": 2, "t": 0.04, "samples": 10 * BLOCK, "rate": SAMPLE_RATE}, pcm),
                         0.04))
        w.write_audio(block, 0.06)
    with Recording(path) as rec:
        track, t0 = rec.audio_track()
        assert rec.lost_audio == [1, 2]
        reasons = " ".join(d.what for d in rec.damaged)
        assert "44100 Hz" in reasons and "not the 9600 samples" in reasons
    assert t0 == 0.0 and len(track) == 4 * BLOCK
    assert np.allclose(track[:BLOCK], 0.25, atol=1e-4) and not track[BLOCK:3 * BLOCK].any()
    assert np.allclose(track[3 * BLOCK:], 0.25, atol=1e-4)


def test_a_players_sound_lines_up_with_its_frames(voiced):
    """The block holding recording time T is stamped with the wall time the player shows the
    frame stamped T, from the start and after a seek."""
    with Recording(voiced) as rec:
        track, t0 = rec.audio_track()
        times = rec.timestamps
    player = RecordingPlayer(voiced, realtime=False, loop=True)
    for start in (0, 7):
        player.seek(start)
        mic = player.audio()
        blocks = [mic.read() for _ in range(5)]
        for k, block in enumerate(blocks):
            recording_time = times[start] + k * BLOCK / SAMPLE_RATE
            assert block.t == pytest.approx(player.wall0 + recording_time - times[start], abs=1e-6)
            assert any(np.allclose(block.samples, _window(track, round((recording_time - t0) * SAMPLE_RATE) + e),
                                   atol=1e-6) for e in (-1, 0, 1)), (start, k)  # within a sample's rounding
        mic.close()
    player.close()


# -- video --------------------------------------------------------------------------------

def test_video_output_muxes_stereo_sound_into_the_mp4(tmp_path):
    import av

    fps, frames = 25, 30
    n = round(frames / fps * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    left = 0.4 * np.sin(2 * np.pi * (200 + 900 * t) * t)  # a chirp, and on the right a beating pair of tones
    right = 0.2 * (np.sin(2 * np.pi * 330 * t) + np.sin(2 * np.pi * 337 * t))
    stereo = np.stack([left, right], 1).astype(np.float32)
    with pytest.raises(ValueError, match="audio_rate"):
        from render.video import VideoOutput

        VideoOutput(tmp_path / "silent", fps, png=False).write_audio(stereo[:10])
    with VideoOutput(tmp_path / "v", fps, png=False, audio_rate=SAMPLE_RATE) as out:
        for k in range(frames):
            out.write(np.full((48, 64, 3), 8 * k, np.uint8))
            out.write_audio(stereo[k * n // frames:(k + 1) * n // frames])
    with av.open(str(tmp_path / "v" / "video.mp4")) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.rate == SAMPLE_RATE and audio.channels == 2
        durations = float(video.duration * video.time_base), float(audio.duration * audio.time_base)
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(audio)], 1)
    assert abs(durations[0] - durations[1]) < 1 / fps and durations[0] == pytest.approx(frames / fps, abs=1 / fps)
    for ch in (0, 1):
        got = decoded[ch, :n]
        assert _lag(got, stereo[:, ch], 96) == 0  # its first sample plays with the first frame
        assert np.corrcoef(got, stereo[:len(got), ch])[0, 1] > 0.98


# -- render ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(voiced, tmp_path_factory):
    """The voiced recording (at seat 0) rendered from seats 1 and 2 of a 3-seat room."""
    from holoport.cli import main

    out = {}
    for seat in (1, 2):
        folder = tmp_path_factory.mktemp(f"seat{seat}")
        rc = main(["render", str(folder), "--recording", str(voiced), "--seat", str(seat), "--fps", "10",
                   "--width", "64", "--height", "48", "--no-png", "--quiet"])
        assert rc == 0
        out[seat] = folder
    return out


def test_render_writes_the_voice_into_the_mp4_and_a_wav(rendered):
    import av

    from render.audio_out import read_wav

    folder = rendered[1]
    summary = json.loads((folder / "render.json").read_text())
    assert summary["audio"]["voices"] == [0] and summary["audio"]["wav"] == "render.wav"
    wav, rate = read_wav(folder / "render.wav")
    assert rate == SAMPLE_RATE and wav.shape == (round(summary["frames"] / 10 * SAMPLE_RATE), 2)
    assert np.sqrt((wav ** 2).mean()) > 0.01  # someone speaks
    with av.open(str(folder / "video.mp4")) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        v, a = c.streams.video[0], c.streams.audio[0]
        assert abs(float(v.duration * v.time_base) - float(a.duration * a.time_base)) < 1 / 10
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(a)], 1)[:, :len(wav)].T
    assert np.corrcoef(decoded[:, 0], wav[:len(decoded), 0])[0, 1] > 0.95  # the MP4 holds what the WAV does


@pytest.mark.parametrize(("seat", "side"), [(1, 0), (2, 1)])
def test_the_voice_comes_from_where_the_person_sits(rendered, seat, side):
    """Seen from seat 1, the person at seat 0 is on the left (26 degrees); from seat 2 on the
    right: that ear is louder and hears the voice first."""
    from holoport.viewing import voice_position
    from render.audio_out import read_wav
    from render.room import Room
    from render.spatial import azimuth, camera_pose

    room = Room(3)
    angle, _ = azimuth(*camera_pose(room.seat_camera(seat, 64, 48)), voice_position(room, 0))
    assert (angle > 0) == (side == 1)
    wav, _ = read_wav(rendered[seat] / "render.wav")
    rms = np.sqrt((wav ** 2).mean(axis=0))
    assert rms[side] > 1.05 * rms[1 - side]
    far_late = _lag(wav[:, 1 - side], wav[:, side], 40)
    assert 5 <= far_late <= 32  # the far ear's interaural delay: 0.1-0.7 ms


def test_view_turns_the_voices_with_the_windows_camera(voiced, tmp_path):
    """`holoport view`'s speaker thread, to a WAV instead of a sound card: the same samples
    as a render from that camera, and the voice moves from left to right when the view
    turns from seat 1 to seat 2 mid-way; realtime voices pace it like a microphone."""
    import time

    from holoport.viewing import RecordedScene, VoicePlayer, spatial_audio
    from render.audio_out import WavSink, read_wav
    from render.room import Room

    scene = RecordedScene([str(voiced)])
    try:
        room = Room(scene.seats)
        cams = [room.seat_camera(seat, 64, 48) for seat in (1, 2)]
        with WavSink(tmp_path / "view.wav") as sink:
            player = VoicePlayer(scene.voices(), room, lambda: cams[player.blocks // 30], sink)
            player.run(blocks=60)
        got, _ = read_wav(tmp_path / "view.wav")
        want = spatial_audio(scene.voices(), room, [cams[0]] * 30, fps=50, frames=30)
        assert got.shape == (60 * BLOCK, 2) and np.abs(got[:30 * BLOCK] - want).max() < 2 / 32767
        first, second = (np.sqrt((got[k * 30 * BLOCK:(k + 1) * 30 * BLOCK] ** 2).mean(0)) for k in (0, 1))
        assert first[0] > first[1] and second[1] > second[0]
        with WavSink(tmp_path / "live.wav") as sink:
            began = time.monotonic()
            VoicePlayer(scene.voices(realtime=True, start=time.time()), room, lambda: cams[0], sink).run(blocks=10)
            assert time.monotonic() - began >= 9 * BLOCK / SAMPLE_RATE
    finally:
        scene.close()


def test_record_without_a_microphone_records_video_only(tmp_path):
    path = tmp_path / "quiet.hprec"
    made = subprocess.run(holoport_cmd("record", str(path), "--frames", "3", "--mic", "99"), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "no microphone, recording video only" in made.stderr
    with Recording(path) as rec:
        assert len(rec) == 3 and rec.audio_count == 0 and rec.meta["audio"] is None


def test_record_speaks_with_the_synthetic_persons_own_voice(tmp_path):
    """`--mic speech`: body 1's demo voice (espeak-ng, or the shared clip it falls back to)."""
    from capture.audio import AudioError, SpeechSource, demo_voices
    from holoport.cli import main

    text, voice = demo_voices(2)[1]
    try:
        spoken = SpeechSource(text, realtime=False, **voice).samples
    except AudioError as exc:
        pytest.skip(f"no synthetic speech here: {exc}")
    path = tmp_path / "speech.hprec"
    assert main(["record", str(path), "--frames", "10", "--body", "1", "--mic", "speech"]) == 0
    with Recording(path) as rec:
        track, t0 = rec.audio_track()
        assert rec.meta["audio"].startswith("speech:") and abs(t0 - rec.timestamps[0]) < BLOCK / SAMPLE_RATE
    n = min(len(track), len(spoken))
    assert n > SAMPLE_RATE / 2 and np.corrcoef(track[:n], spoken[:n])[0, 1] > 0.999
