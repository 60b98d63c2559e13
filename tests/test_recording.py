"""Holoport recordings: round trips, crash safety at any byte, seeking, timing, and the
record / play / join --source commands as real processes."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard

from capture import Intrinsics, RGBDFrame, SyntheticCamera
from capture.recording import INDEX, MAGIC, RGBD, Recording, RecordingError, RecordingPlayer, RecordingWriter
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
    bad.write_bytes(bytes(data[:-30]))  # no index either: the scan resyncs after the damage
    with Recording(bad) as rec:
        assert len(rec) == 6 and not rec.indexed and rec.lost == [3]
        assert [e.head["index"] for e in rec] == [0, 1, 2, 4, 5, 6]
        assert _same(rec.entry(3).rgbd(), frames[4])


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


def _join_from(path, seconds: float) -> tuple[subprocess.Popen, str, list]:
    """A real `holoport join --source PATH` with a hub and a receiving node beside it: the
    process, its output and the frames the node received from it."""
    with Hub(free_tcp_endpoint(), seats=3) as hub:
        join = spawn("join", "--hub", hub.endpoint, "--source", str(path), "--name", "rec",
                     "--duration", str(seconds), "--fps", "10")
        got = []
        with Node(hub.endpoint, "main", "desk") as desk:
            deadline = time.monotonic() + 60
            while join.poll() is None and time.monotonic() < deadline:
                desk.heartbeat()
                got += [f for f in desk.poll(0.1) if f.name == "rec"]
        out = join.communicate(timeout=30)[0]
    return join, out, got


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
    join, out, got = _join_from(rec, seconds=4)
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


# --- damaged recordings: every intact frame plays, every damaged one is reported --------------------------


def _records(data: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, end, kind, frame number) of every record of an undamaged recording, read from
    the format itself (not through the reader under test)."""
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    at, out = len(MAGIC) + 4 + n + 4, []
    while data[at:at + 4] == b"HPFR":
        _, kind, hn, pn = struct.unpack_from("<4sBIQ", data, at)
        end = at + 17 + hn + pn + 4
        out.append((at, end, kind, json.loads(data[at + 17:at + 17 + hn]).get("index", -1)))
        at = end
    return out


def _frames_at(data: bytes) -> dict[int, tuple[int, int]]:
    """Frame number -> (offset, end) of its record."""
    return {num: (at, end) for at, end, kind, num in _records(data) if kind != INDEX}


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _play_all(path) -> tuple[dict[int, str], Recording]:
    """Every frame the player gives (frame number -> digest of its payload), as fast as it
    can, once."""
    player = RecordingPlayer(path, realtime=False, loop=False)
    played = {}
    while (entry := player.read()) is not None:
        assert entry.head["index"] not in played
        played[entry.head["index"]] = _digest(entry.payload)
    player.close()
    return played, player.recording


def _play_traced(path) -> tuple[dict[int, str], Recording, int]:
    """``_play_all``, and the most memory Python allocated meanwhile (bytes)."""
    tracemalloc.start()
    try:
        played, rec = _play_all(path)
        return played, rec, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def sixty(tmp_path_factory):
    """A 60-frame RGB-D recording of the synthetic person, and its frames' payloads."""
    path = tmp_path_factory.mktemp("sixty") / "sixty.hprec"
    camera = SyntheticCamera()
    with RecordingWriter(path, {"crop": "person"}) as w:
        for i in range(60):
            w.write_rgbd(camera.read(t=i / 15))
    with Recording(path) as rec:
        payloads = {e.head["index"]: _digest(e.payload) for e in rec}
    return path, payloads


def _flip(data: bytearray, at: int, bit: int = 4) -> None:
    data[at] ^= 1 << bit


def test_one_flipped_bit_in_frame_20_loses_frame_20_only(sixty, tmp_path):
    from holoport.point_sources import RecordingPoints

    path, payloads = sixty
    data = bytearray(path.read_bytes())
    at, end = _frames_at(data)[20]
    _flip(data, (at + end) // 2)  # in its payload: the CRC-32 no longer checks out
    bad = tmp_path / "bad.hprec"
    bad.write_bytes(bytes(data))
    played, rec = _play_all(bad)
    assert sorted(played) == [i for i in range(60) if i != 20]
    assert all(played[i] == payloads[i] for i in played)
    assert rec.lost == [20]
    source = RecordingPoints(bad, realtime=False, loop=False)  # what `join --source` reads
    clouds = 0
    with pytest.raises(EOFError):
        while True:
            positions, _ = source.read()
            clouds += len(positions) > 0
    assert clouds == 59 and source.skipped == 1
    source.close()
    shown = subprocess.run(holoport_cmd("play", str(bad), "--fast"), cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "played 59 frames" in shown.stdout and "1 damaged frame skipped (frame 20)" in shown.stdout, shown.stdout
    assert "frame 20 lost" in shown.stderr  # the warning


def test_a_frame_whose_payload_does_not_decode_is_skipped(frames, tmp_path):
    """A record whose CRC-32 checks out but whose images do not decode (written so)."""
    from holoport.point_sources import RecordingPoints

    path = tmp_path / "undecodable.hprec"
    with RecordingWriter(path) as w:
        for i, f in enumerate(frames):
            if i == 2:
                head = {"index": i, "timestamp": f.timestamp, "intrinsics": f.intrinsics.to_dict(),
                        "depth_scale": f.depth_scale, "pose": np.eye(4).reshape(16).tolist(), "meta": {}}
                w._record(RGBD, head, b"not zstd at all" * 10, f.timestamp)
            else:
                w.write_rgbd(f)
    source = RecordingPoints(path, realtime=False, loop=False)
    got = []
    with pytest.raises(EOFError):
        while True:
            got.append(len(source.read()[0]))
    assert len(got) == 5 and source.skipped == 1 and source.player.recording.lost == [2]
    source.close()
    live = RecordingPoints(path, realtime=True, loop=True)  # as `join --source` plays it
    for _ in range(30):
        live.read()
        time.sleep(0.02)
    assert live.skipped == 1 and live.player.recording.lost == [2]
    live.close()
    shown = subprocess.run(holoport_cmd("play", str(path), "--fast"), cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and "played 5 frames" in shown.stdout, shown.stdout + shown.stderr
    assert "1 damaged frame skipped (frame 2)" in shown.stdout


def test_a_damaged_index_and_damaged_frames_resync_and_report_each(sixty, tmp_path):
    path, payloads = sixty
    data = bytearray(path.read_bytes())
    at_of = _frames_at(data)
    index_at, index_end, _, _ = _records(data)[-1]
    _flip(data, index_end - 40)  # in the index's table
    _flip(data, sum(at_of[20]) // 2)  # frame 20's payload
    _flip(data, at_of[41][0] + 9, 2)  # frame 41's payload length: its framing is off by 4 bytes
    data[at_of[50][0] + 9:at_of[50][0] + 17] = struct.pack("<Q", len(data) - at_of[50][0] - 30)  # runs to the end
    bad = tmp_path / "bad.hprec"
    bad.write_bytes(bytes(data))
    played, rec = _play_all(bad)
    assert not rec.indexed
    assert sorted(played) == [i for i in range(60) if i not in (20, 41, 50)]
    assert all(played[i] == payloads[i] for i in played)
    assert rec.lost == [20, 41, 50]
    assert any(d.start <= index_at < d.end for d in rec.damaged)  # the index too
    shown = subprocess.run(holoport_cmd("play", str(bad), "--fast"), cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "played 57 frames" in shown.stdout and "3 damaged frames skipped (frames 20, 41, 50)" in shown.stdout


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small recording of 30 RGB-D and cloud frames, some clouds holding stray record
    markers; and its frames' payloads."""
    rng = np.random.default_rng(7)
    k = Intrinsics(16, 12, 20.0, 20.0, 8.0, 6.0)
    path = tmp_path_factory.mktemp("small") / "small.hprec"
    with RecordingWriter(path, {"who": "small"}) as w:
        for i in range(30):
            if i % 2:
                payload = rng.bytes(int(rng.integers(0, 3000)))
                if i % 3 == 0:  # a marker with a plausible framing inside a payload
                    payload += b"HPFR" + struct.pack("<BIQ", 2, 40, 10_000) + b'{"format": "x"}' + rng.bytes(40)
                w.write_cloud(i / 15, payload, 1, "bytes")
            else:
                depth = rng.integers(0, 4000, (12, 16)).astype(np.uint16)
                color = rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)
                w.write_rgbd(RGBDFrame(depth, color, k, 0.001, np.eye(4), i / 15, i))
    with Recording(path) as rec:
        payloads = {e.head["index"]: _digest(e.payload) for e in rec}
    assert len(payloads) == 30
    return path, payloads


def _damage(data: bytes, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """``data`` with one to three random damages (a flipped bit, bytes overwritten, a block
    zeroed, a bogus length, a cut), half of them at a record's start, the header, the
    index or the trailer; and, per byte of ``data``, whether it changed (or was cut off)."""
    out = bytearray(data)
    spots = [0, len(data) - 12, *(at for at, _, _, _ in _records(data))]
    cut = len(data)
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.choice(spots)) + int(rng.integers(0, 24)) if rng.random() < 0.5 else int(rng.integers(len(data)))
        at = min(at, len(data) - 1)
        what = int(rng.integers(5))
        if what == 0:
            out[at] ^= 1 << int(rng.integers(8))
        elif what == 1:
            n = int(rng.integers(1, 41))
            out[at:at + n] = rng.bytes(len(out[at:at + n]))
        elif what == 2:
            n = int(rng.integers(1, 700))
            out[at:at + n] = bytes(len(out[at:at + n]))
        elif what == 3:  # a record's head length (u32) or payload length (u64)
            field, n = int(rng.choice(spots[2:])) + 5, 4
            if rng.random() < 0.7:
                field, n = field + 4, 8
            out[field:field + n] = struct.pack("<Q", int(rng.integers(0, 1 << 62)))[:n]
        else:
            cut = min(cut, at)
    changed = np.frombuffer(bytes(out), np.uint8) != np.frombuffer(data, np.uint8)
    changed[cut:] = True
    return bytes(out[:cut]), changed


def test_every_intact_frame_of_300_randomly_damaged_files_plays(small, tmp_path):
    """Bit flips, overwrites, zeroed blocks, bogus lengths and cuts anywhere: every record
    none of whose bytes changed plays, nothing damaged plays, and every frame that does not
    play is reported."""
    path, payloads = small
    data = path.read_bytes()
    records = [r for r in _records(data) if r[2] != INDEX]
    rng = np.random.default_rng(2024)
    bad = tmp_path / "bad.hprec"
    unplayed = 0
    for trial in range(300):
        damaged, changed = _damage(data, rng)
        bad.write_bytes(damaged)
        intact = {num for at, end, _, num in records if not changed[at:end].any()}
        try:
            played, rec = _play_all(bad)
        except RecordingError:
            assert not intact, trial
            continue
        assert intact <= played.keys(), (trial, sorted(intact - played.keys()))
        assert all(payloads[i] == p for i, p in played.items()), trial
        for at, end, _, num in records:
            if num not in played and at < len(damaged):
                assert num in rec.lost or any(d.start < end and at < d.end for d in rec.damaged), (trial, num)
        unplayed += 30 - len(played)
    assert unplayed > 0  # the damage did cost frames: the test saw damage


@pytest.mark.parametrize("indexed", [True, False])
@pytest.mark.parametrize("length", ["past the end", "to the end"])
def test_a_bogus_length_allocates_nothing_and_the_scan_resyncs(tmp_path, indexed, length):
    rng = np.random.default_rng(3)
    path = tmp_path / "big.hprec"
    with RecordingWriter(path) as w:
        for i in range(160):
            w.write_cloud(i / 15, rng.bytes(64 << 10), 1, "bytes")  # 10 MB in all
    data = bytearray(path.read_bytes())
    at = _frames_at(data)[3][0]
    claim = 1 << 62 if length == "past the end" else len(data) - at - 17 - 40 - 4
    data[at + 9:at + 17] = struct.pack("<Q", claim)
    if not indexed:
        del data[-12:]
    path.write_bytes(bytes(data))
    played, rec, peak = _play_traced(path)
    assert rec.indexed == indexed
    assert sorted(played) == [i for i in range(160) if i != 3] and rec.lost == [3]
    assert peak < 2 << 20, peak  # a frame is 64 KiB; the bogus record would be up to 10 MB


def test_a_recording_with_megabytes_of_garbage_inside_still_plays_both_ends(tmp_path):
    """Garbage with stray markers claiming records to the end of the file, and no index:
    the scan searches through it for the next record that checks out."""
    rng = np.random.default_rng(5)
    path = tmp_path / "garbage.hprec"
    garbage = bytearray(rng.bytes(16 << 20))
    for at in (1000, 5 << 20, 12 << 20):  # markers whose head parses: the CRC is read to the end
        head = b'{"format": "x"}'
        garbage[at:at + 17 + len(head)] = b"HPFR" + struct.pack("<BIQ", 2, len(head), 1 << 25) + head
        garbage[at + 9:at + 17] = struct.pack("<Q", len(garbage) - at - 17 - len(head) + 100)
    with RecordingWriter(path) as w:
        w.write_cloud(0.0, b"first", 1, "bytes")
        w._file.write(bytes(garbage))
        w.write_cloud(0.1, b"last", 1, "bytes")
    path.write_bytes(path.read_bytes()[:-12])  # no trailer: scanned
    played, rec, peak = _play_traced(path)
    assert played == {0: _digest(b"first"), 1: _digest(b"last")}
    assert any(d.end - d.start >= len(garbage) for d in rec.damaged)
    assert peak < 8 << 20, peak


def test_what_is_not_a_recording_is_still_refused_and_a_damaged_header_is_not(small, tmp_path):
    path, payloads = small
    data = bytearray(path.read_bytes())
    data[0:12] = rng_bytes = np.random.default_rng(9).bytes(12)  # the magic and the meta's length
    assert rng_bytes[:8] != MAGIC
    bad = tmp_path / "headless.hprec"
    bad.write_bytes(bytes(data))
    played, rec = _play_all(bad)
    assert played == payloads and rec.meta == {} and rec.damaged[0].start == 0
    text = tmp_path / "notes.txt"
    text.write_text("HPFR is how a record starts\n" * 1000)
    with pytest.raises(RecordingError, match="not a Holoport recording"):
        Recording(text)


def test_join_from_a_damaged_recording_stays_in_the_meeting(tmp_path):
    """A real hub and a real `holoport join --source` on a recording with two damaged frames:
    it plays through them (looping) for its whole --duration and leaves cleanly."""
    from capture import rgbd_to_points

    path = tmp_path / "damaged.hprec"
    camera = SyntheticCamera()
    with RecordingWriter(path) as w:
        for i in range(20):
            w.write_rgbd(camera.read(t=i / 10))
    data = bytearray(path.read_bytes())
    for k in (5, 12):
        _flip(data, sum(_frames_at(data)[k]) // 2)
    path.write_bytes(bytes(data))
    with Recording(path) as r:
        counts = {e.head["index"]: len(rgbd_to_points(e.rgbd())[0]) for e in r}
    assert sorted(counts) == [i for i in range(20) if i not in (5, 12)]
    past = {c for i, c in counts.items() if i > 12} - {c for i, c in counts.items() if i < 12}
    assert past
    join, out, frames = _join_from(path, seconds=5)
    got = [len(f.positions) for f in frames]
    assert join.returncode == 0, out
    sent = re.search(r"^rec: sent (\d+)", out, re.MULTILINE)
    assert sent and int(sent.group(1)) >= 30, out
    assert set(got) <= set(counts.values()) and set(got) & past, (sorted(set(got)), sorted(past))
    assert "frame 5 lost" in out and "frame 12 lost" in out


def test_a_damaged_frame_in_a_viewed_recording_keeps_the_last_good_one_up(sixty, tmp_path):
    """`holoport view` / `render --recording` read frames by index, not by playing."""
    from holoport.viewing import RecordedScene

    path, _ = sixty
    data = bytearray(path.read_bytes())
    at, end = _frames_at(data)[20]
    _flip(data, (at + end) // 2)
    bad = tmp_path / "bad.hprec"
    bad.write_bytes(bytes(data))
    scene = RecordedScene([str(bad)])
    try:
        before = scene.people(19 / 15 + 0.01)[0].positions
        during = scene.people(20 / 15 + 0.01)[0].positions  # frame 20's time: frame 19 stays up
        after = scene.people(21 / 15 + 0.01)[0].positions
        assert len(before) > 0 and np.array_equal(before, during) and not np.array_equal(during, after)
        assert scene.sources[0].player.recording.lost == [20]
    finally:
        scene.close()


def test_an_index_that_checks_out_but_lies_is_not_believed(sixty, tmp_path):
    """Its CRC-32 recomputed, its offsets shifted into the records: the reader scans instead."""
    from capture.recording import _REC, RECORD, TRAILER

    path, payloads = sixty
    data = path.read_bytes()
    (index_at,) = struct.unpack("<Q", data[-8:])
    with Recording(path) as rec:
        offsets = np.array(rec._offsets, np.uint64)
    head = json.dumps({"frames": len(offsets)}).encode()
    table = np.zeros(len(offsets), [("offset", "<u8"), ("t", "<f8")])
    table["offset"] = offsets + np.uint64(7)  # every frame "starts" 7 bytes into its record
    body = table.tobytes()
    forged = (data[:index_at] + _REC.pack(RECORD, INDEX, len(head), len(body)) + head + body
              + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + TRAILER + struct.pack("<Q", index_at))
    bad = tmp_path / "forged.hprec"
    bad.write_bytes(forged)
    played, rec = _play_all(bad)
    assert sorted(played) == list(range(60)) and all(played[i] == payloads[i] for i in played)
    assert not rec.indexed


def test_an_rgbd_frame_declaring_huge_images_is_damaged_not_a_crash(frames, tmp_path):
    """zstd allocates what a frame declares; the head's image size is checked first."""
    path = tmp_path / "huge.hprec"
    with RecordingWriter(path) as w:
        w.write_rgbd(frames[0])
    with Recording(path) as rec:
        entry = rec.entry(0)
    for head in ({**entry.head, "intrinsics": {**entry.head["intrinsics"], "width": 1 << 20, "height": 1 << 20}},
                 {**entry.head, "depth_scale": "deep"}, {**entry.head, "meta": 5}):
        bomb = type(entry)(entry.kind, 0, 0.0, head, zstandard.ZstdCompressor().compress(bytes(1 << 16)))
        with pytest.raises(RecordingError):
            bomb.rgbd()
    declared = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(1 << 22))
    with pytest.raises(RecordingError, match="another size"):
        type(entry)(entry.kind, 0, 0.0, entry.head, declared).rgbd()
