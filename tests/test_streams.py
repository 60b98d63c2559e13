"""The stream codec interface: codecs found by the registry, one decoder per (sender,
stream) at every receiver, Draco as a plug-in codec working live, several streams per sender."""

from __future__ import annotations

import json
import signal
import struct
import time
from dataclasses import dataclass
from importlib.metadata import entry_points

import numpy as np
import pytest

import codec
from codec import Cloud, CodecError, container
from codec.registry import _BY_ID, _BY_NAME
from holoport.endpoints import free_tcp_endpoint
from holoport.hub import Hub
from holoport.node import Node
from tests.conftest import spawn


def _cloud(n: int = 2000, seed: int = 0) -> Cloud:
    rng = np.random.default_rng(seed)
    return Cloud((rng.random((n, 3)) * [1.0, 1.8, 0.6] + [-0.5, 0.0, -0.3]).astype(np.float32),
                 rng.integers(0, 256, (n, 3), dtype=np.uint8))


def _drain(node: Node, want, timeout: float = 5.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while not want(got) and time.monotonic() < deadline:
        node.heartbeat()
        got += node.poll(0.05)
    return got


# -- the registry -------------------------------------------------------------------------
def test_every_registered_codec_round_trips_its_configuration_and_its_frames():
    names = codec.available("cloud")
    assert {"baseline", "octree", "draco"} <= set(names)
    cloud = _cloud()
    for name in names:
        c = codec.for_meeting(name)
        assert codec.from_config(c.get_config()) == c, name
        encoder = c.encoder() if name != "octree" else c.encoder(keyframe_interval=30)
        decoder = None
        for i in range(3):  # a stream: the octree's later frames continue the first
            encoded = encoder.encode(cloud, force_keyframe=False)
            assert encoded.points == len(cloud.positions) and encoded.keyframe == (i == 0 or name != "octree")
            decoder = decoder or codec.decoder_for(encoded.payload)
            positions, colors = decoder.decode(encoded.payload)
            assert len(positions) > 0.9 * len(cloud.positions), name
            # every decoded point lies within a cell of an input point
            nearest = np.abs(positions[:200, None, :] - cloud.positions[None, :, :]).max(axis=2).min(axis=1)
            assert nearest.max() <= c.max_error * 1.01 + 1e-6, name
        assert encoder.encode(cloud, force_keyframe=True).keyframe


def test_the_registry_refuses_a_second_codec_under_a_taken_name_or_id():
    @dataclass(frozen=True)
    class Impostor(codec.Codec):
        codec_id = codec.OctreeCodec.codec_id
        name = "impostor"

    with pytest.raises(ValueError, match="taken by codec.octree.OctreeCodec"):
        codec.register_codec(Impostor)
    assert "impostor" not in codec.available()
    with pytest.raises(ValueError, match="unknown codec 'nope'; available: baseline, draco, octree"):
        codec.codec_class("nope")
    with pytest.raises(ValueError, match="color_step"):
        codec.for_meeting("baseline", color_step=3)  # an option the codec does not have


def test_draco_is_found_through_the_entry_point_group_not_a_list_in_the_code():
    points = {p.name: p.value for p in entry_points(group="holoport.codecs")}
    assert points.get("draco") == "codec.draco:DracoCodec"
    assert codec.codec_class("draco").__module__ == "codec.draco"


@dataclass(frozen=True)
class RawCodec(codec.Codec):
    """A codec defined here, in the test: float32 positions and colours, uncompressed."""

    codec_id = 200
    name = "raw-test"

    def get_config(self) -> dict:
        return {"id": self.name}

    def encode(self, positions, colors) -> bytes:
        return container.pack(self.codec_id, struct.pack("<I", len(positions)),
                              [np.asarray(positions, np.float32).tobytes(), np.asarray(colors, np.uint8).tobytes()])

    @classmethod
    def decode(cls, data, *, max_points=None) -> Cloud:
        box = container.unpack(data)
        (n,) = struct.unpack("<I", box.params)
        if max_points is not None and n > max_points:
            raise CodecError("too many points")
        if len(box.sections) != 2 or len(box.sections[0]) != 12 * n or len(box.sections[1]) != 3 * n:
            raise CodecError("raw sections do not match the count")
        return Cloud(np.frombuffer(box.sections[0], np.float32).reshape(n, 3),
                     np.frombuffer(box.sections[1], np.uint8).reshape(n, 3))


def test_a_codec_registered_by_anyone_reaches_receivers_through_a_real_hub():
    """No edit to the node or the hub: the receiver makes the decoder from the payload's id."""
    codec.register_codec(RawCodec)
    try:
        cloud = _cloud(500)
        with Hub(free_tcp_endpoint(), seats=3) as hub, \
                Node(hub.endpoint, "r", "a", encoder=codec.get_codec("raw-test")) as a, \
                Node(hub.endpoint, "r", "b") as b:
            _drain(b, lambda got: b.peers, timeout=2)
            a.send(cloud)
            got = _drain(b, lambda got: got)
            assert len(got) == 1 and got[0].name == "a"
            np.testing.assert_array_equal(got[0].positions, cloud.positions)
            np.testing.assert_array_equal(got[0].colors, cloud.colors)
    finally:
        _BY_NAME.pop(RawCodec.name, None)
        _BY_ID.pop(RawCodec.codec_id, None)


# -- Draco's own checks on untrusted bytes ---------------------------------------------------
def test_a_draco_stream_that_lies_about_its_points_is_refused_before_draco_allocates():
    data = codec.get_codec("draco").encode(*_cloud(3000))
    assert len(codec.decode(data).positions) == 3000
    with pytest.raises(CodecError, match="meeting allows|more than"):
        codec.decode(data, max_points=1000)
    box = container.unpack(data)
    draco = bytearray(box.sections[0])
    struct.pack_into("<i", draco, 11, 1 << 30)  # Draco's own header now claims a billion points
    with pytest.raises(CodecError, match="declares 1073741824 points"):
        codec.decode(container.pack(3, bytes(box.params), [bytes(draco)]))
    lying = container.pack(3, struct.pack("<I", 1 << 21), [bytes(box.sections[0])])  # 2M points in ~20 kB
    with pytest.raises(CodecError):
        codec.decode(lying)


def test_draco_frames_with_repeated_points_decode_and_a_foreign_layout_is_refused():
    positions, colors = _cloud(3000)
    positions[1], colors[1] = positions[0], colors[0]  # Draco merges the two
    decoded = codec.decode(codec.get_codec("draco").encode(positions, colors))
    assert len(decoded.positions) == 2999
    box = container.unpack(codec.get_codec("draco").encode(*_cloud(3000)))
    draco = bytearray(box.sections[0])
    draco[16] = 3  # a third attribute beside positions and colours
    with pytest.raises(CodecError, match="exactly positions"):
        codec.decode(container.pack(3, bytes(box.params), [bytes(draco)]))
    empty = codec.get_codec("draco").encode(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    assert codec.decode(empty).positions.shape == (0, 3)


@dataclass(frozen=True)
class BrokenCodec(RawCodec):
    """A plug-in whose decoder misbehaves: raises what it should not, or returns no cloud."""

    codec_id = 201
    name = "broken-test"

    @classmethod
    def decode(cls, data, *, max_points=None):
        positions, colors = RawCodec.decode(data, max_points=max_points)
        if len(positions) == 1:
            raise RuntimeError("a bug in the plug-in")
        return positions, colors[:, :1]  # one channel of colour


def test_a_plug_in_decoder_that_raises_or_returns_no_cloud_is_a_counted_decode_error():
    from holoport.receiver import Receivers
    from holoport.session import NodeCounters

    codec.register_codec(BrokenCodec)
    try:
        counters = NodeCounters()
        receivers = Receivers(counters)
        for n in (1, 5):
            payload = RawCodec.encode(BrokenCodec(), *_cloud(n))
            assert receivers.decode((1, 0), payload, max_points=1000) is None
        assert counters.decode_errors == 2
    finally:
        _BY_NAME.pop(BrokenCodec.name, None)
        _BY_ID.pop(BrokenCodec.codec_id, None)


# -- streams: several per sender, one decoder each ------------------------------------------
def test_two_streams_of_one_sender_are_decoded_apart_and_reach_a_late_joiner():
    """Stream 0 (baseline) and stream 1 (an octree sequence, whose frames continue each
    other) from one sender: each has its own decoder at the receiver, a keyframe request
    names its stream, and a late joiner gets both streams' latest keyframes."""
    near, far = _cloud(800, 1), _cloud(1200, 2)
    with Hub(free_tcp_endpoint(), seats=4) as hub, Node(hub.endpoint, "r", "a") as a, Node(hub.endpoint, "r", "b") as b:
        second = a.add_stream(codec.OctreeCodec(depth=8, slices=1, color_step=8).encoder(keyframe_interval=1000))
        assert second == 1
        _drain(b, lambda got: b.peers, timeout=2)
        for _ in range(3):
            a.send(near)
            a.send(far, stream=second)
            got = _drain(b, lambda got: {f.stream for f in got} == {0, 1})
            by_stream = {f.stream: f for f in got}
            assert len(by_stream[0].positions) == 800 and len(by_stream[1].positions) > 1000
            assert by_stream[1].frame.colors.shape == (len(by_stream[1].positions), 3)
        assert b.counters.decode_errors == 0 and b.counters.missing_reference == 0
        assert set(b.receivers._decoders) == {(a.id, 0), (a.id, 1)}

        # b misses a frame of stream 1: the next one continues it, so b asks for a keyframe of stream 1
        a.send(far, stream=second)
        a.send(far, stream=second)
        time.sleep(0.3)
        b.poll(0.2)
        assert b.counters.missing_reference == 1
        _drain(a, lambda got: a.counters.keyframe_requests, timeout=3)
        assert a.counters.keyframe_requests == 1 and a.senders._key_wanted == {1}
        head = a.send(far, stream=second)
        assert head["key"] and head["stream"] == 1 and not a.senders._key_wanted

        with Node(hub.endpoint, "r", "late") as late:
            got = _drain(late, lambda got: {f.stream for f in got} == {0, 1})
            assert {f.stream for f in got} == {0, 1} and late.counters.decode_errors == 0


def test_stream_numbers_outside_the_wire_range_are_malformed():
    from holoport import wire

    good = wire.header(wire.MessageType.FRAME, room="r", seq=1, ts={}, stream=wire.MAX_STREAMS - 1)
    assert wire.decode(wire.encode(good, [b"x"])).header["stream"] == wire.MAX_STREAMS - 1
    for bad in (wire.MAX_STREAMS, -1, "1", 1.5):
        with pytest.raises(wire.FieldError):
            wire.decode(wire.encode({**good, "stream": bad}, [b"x"]))


# -- Draco live, with no edit to node, hub, participant or CLI ------------------------------
def test_participants_meet_with_draco_through_holoport_join(tmp_path):
    endpoint = free_tcp_endpoint()
    hub = spawn("hub", "--bind", endpoint, "--seats", "3")
    try:
        joins = [spawn("join", "--hub", endpoint, "--room", "draco", "--name", name, "--body", str(i),
                       "--fps", "8", "--duration", "5", "--out", str(tmp_path), "--codec", "draco",
                       "--codec-option", "compression_level=1")
                 for i, name in enumerate(("ana", "ben"))]
        outputs = [p.communicate(timeout=120)[0] for p in joins]
    finally:
        hub.send_signal(signal.SIGINT)
        hub.communicate(timeout=10)
    for p, text in zip(joins, outputs, strict=True):
        assert p.returncode == 0, text
    reports = {r["name"]: r for r in (json.loads(f.read_text()) for f in tmp_path.glob("seat*.json"))}
    assert set(reports) == {"ana", "ben"}
    for name, other in (("ana", "ben"), ("ben", "ana")):
        r = reports[name]
        assert r["options"]["codec"] == "draco" and r["options"]["codec_options"] == {"compression_level": 1}
        assert r["received_by_sender"].get(other, 0) >= 5 and r["decode_errors"] == 0
        assert r["points_per_frame"] > 1000
