"""Holoport recordings: round trips, crash safety at any byte, seeking, timing, and the
record / play / join --source commands as real processes."""

from __future__ import annotations

import re
import subprocess
import time

import numpy as np
import pytest

from capture import SyntheticCamera
from capture.recording import MAGIC, Recording, RecordingError, RecordingPlayer, RecordingWriter
from holoport.endpoints import free_tcp_endpoint
from holoport.hub import Hub
from holoport.node import Node
from tests.conftest import ROOT, holoport_cmd, spawn


@pytest.fixture(scope="module")
def frames():
    camera = SyntheticCamera()
    return [camera.read(t=i / 10) for i in range(6)]


@pytest.fixture
def recorded(tmp_path, frames):
    path = tmp_path / "r.hprec"
    with RecordingWriter(path, {"who": "test"}) as w:
        for f in frames:
            w.write_rgbd(f)
        w.write_cloud(0.7, b"\x01\x02\x03" * 100, 100, "bytes")
    return path


def _same(a, b) -> bool:
    return (np.array_equal(a.depth, b.depth) and np.array_equal(a.color, b.color)
            and a.intrinsics == b.intrinsics and np.allclose(a.camera_pose, b.camera_pose)
            and a.depth_scale == b.depth_scale)


def test_frames_come_back_as_they_went_in(recorded, frames):
    with Recording(recorded) as rec:
        assert len(rec) == 7 and rec.indexed and rec.meta == {"who": "test"}
        for i, f in enumerate(frames):
            e = rec.entry(i)
            assert _same(e.rgbd(), f) and e.timestamp == pytest.approx(f.timestamp)
        cloud = rec.entry(6)
        assert cloud.payload == b"\x01\x02\x03" * 100 and cloud.head["points"] == 100
        with pytest.raises(RecordingError, match="not RGB-D"):
            cloud.rgbd()


def test_a_file_cut_off_at_any_byte_plays_up_to_its_last_complete_frame(recorded, frames, tmp_path):
    import struct

    data = recorded.read_bytes()
    (index_at,) = struct.unpack("<Q", data[-8:])
    with Recording(recorded) as rec:
        header_end = rec._start
        ends = [*rec._offsets[1:], index_at]  # where each frame's record ends
    rng = np.random.default_rng(0)
    cuts = sorted({*rng.integers(0, len(data), 300).tolist(), *range(header_end - 3, header_end + 3),
                   *[e - 1 for e in ends], *ends, len(data) - 1})
    cut_file = tmp_path / "cut.hprec"
    for cut in cuts:
        cut_file.write_bytes(data[:cut])
        if cut < header_end:
            with pytest.raises(RecordingError):
                Recording(cut_file)
            continue
        with Recording(cut_file) as rec:
            assert len(rec) == sum(e <= cut for e in ends), cut
            assert not rec.indexed
            for i in range(min(len(rec), 6)):
                assert _same(rec.entry(i).rgbd(), frames[i])


def test_a_damaged_frame_is_reported_and_the_others_still_play(recorded, frames, tmp_path):
    with Recording(recorded) as rec:
        middle = rec._offsets[3] + 200
    data = bytearray(recorded.read_bytes())
    data[middle] ^= 0xFF
    bad = tmp_path / "bad.hprec"
    bad.write_bytes(bytes(data))
    with Recording(bad) as rec:  # the index is intact: every other frame plays
        assert len(rec) == 7
        with pytest.raises(RecordingError, match="damaged"):
            rec.entry(3)
        assert _same(rec.entry(4).rgbd(), frames[4])
    bad.write_bytes(bytes(data[:-30]))  # no index either: playable up to the damage
    with Recording(bad) as rec:
        assert len(rec) == 3


def test_what_is_not_a_recording_is_refused_without_reading_it_all(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(RecordingError, match="not a Holoport recording"):
        Recording(junk)
    huge = tmp_path / "huge"  # a header that claims 4 GB of metadata
    huge.write_bytes(MAGIC + b"\xff\xff\xff\xff" + b"{}")
    with pytest.raises(RecordingError):
        Recording(huge)


def test_the_player_keeps_the_original_timing_seeks_and_loops(recorded):
    player = RecordingPlayer(recorded, realtime=False, loop=True)
    got = [player.read().index for _ in range(9)]
    assert got == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    player.seek(4)
    assert player.read().index == 4
    live = RecordingPlayer(recorded, realtime=True, loop=False)
    seen = []
    start = time.monotonic()
    while (e := live.read()) is not None:
        seen.append((time.monotonic() - start, e.index, e.timestamp))
        time.sleep(0.01)
    stamps = live.recording.timestamps
    for elapsed, i, stamp in seen:  # the newest frame due: never ahead of the recording's
        assert stamp <= elapsed + 0.02  # clock, and the next one was not due yet
        assert i == len(stamps) - 1 or stamps[i + 1] > elapsed - 0.05
    assert {i for _, i, _ in seen} == set(range(7))


def test_record_play_and_join_from_a_recording_as_real_processes(tmp_path):
    rec = tmp_path / "me.hprec"
    made = subprocess.run(holoport_cmd("record", str(rec), "--frames", "20", "--fps", "20"),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and "wrote 20 frames" in made.stdout, made.stdout + made.stderr
    played = subprocess.run(holoport_cmd("play", str(rec), "--fast"), cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert played.returncode == 0 and "played 20 frames" in played.stdout, played.stdout + played.stderr
    with Recording(rec) as r:
        from capture import rgbd_to_points

        recorded_points = {len(rgbd_to_points(e.rgbd())[0]) for e in r}
    with Hub(free_tcp_endpoint(), seats=3) as hub:
        join = spawn("join", "--hub", hub.endpoint, "--source", str(rec), "--name", "rec",
                     "--duration", "4", "--fps", "10")
        got = []
        with Node(hub.endpoint, "main", "desk") as desk:
            deadline = time.monotonic() + 40
            while join.poll() is None and time.monotonic() < deadline:
                desk.heartbeat()
                got += [f for f in desk.poll(0.1) if f.name == "rec"]
        out = join.communicate(timeout=30)[0]
    assert join.returncode == 0, out
    assert re.search(r"^rec: sent \d+", out, re.MULTILINE), out
    assert len(got) >= 10
    # the baseline codec keeps every point: what arrives is what the recording held
    assert {len(f.positions) for f in got} <= recorded_points


def test_an_rgbd_sequence_records_and_plays_back_as_a_whole_room(data_dir, tmp_path):
    rec = tmp_path / "room.hprec"
    made = subprocess.run(holoport_cmd("record", str(rec), "--source", str(data_dir / "rgbd" / "slambook"),
                                       "--frames", "5", "--fps", "20"),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    with Recording(rec) as r:
        assert len(r) == 5 and r.meta["crop"] == "none"
        first = r.entry(0).rgbd()
        assert first.intrinsics.fx == 518.0 and not np.allclose(r.entry(4).rgbd().camera_pose, np.eye(4))
    played = subprocess.run(holoport_cmd("play", str(rec), "--fast"), cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    points = re.search(r"played 5 frames .* ([\d,]+) points per frame", played.stdout)
    assert points and int(points.group(1).replace(",", "")) > 100_000, played.stdout  # not cut to a person
