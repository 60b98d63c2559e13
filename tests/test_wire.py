import msgpack
import pytest

from holoport import wire
from holoport.wire import MessageType


def test_round_trip_keeps_header_and_payload_frames():
    head = wire.header(MessageType.FRAME, room="r", src=3, seq=7, ts={"capture": 1.5})
    frames = wire.encode(head, [b"\x00payload", b"second"])
    msg = wire.decode(frames)
    assert msg.type == "frame"
    assert msg.header == head
    assert msg.header["v"] == wire.PROTOCOL_VERSION
    assert msg.payloads == [b"\x00payload", b"second"]


def test_unknown_keys_are_ignored_not_rejected():
    raw = msgpack.packb({"v": wire.PROTOCOL_VERSION, "type": "heartbeat", "future_field": [1, 2]})
    assert wire.decode([raw]).header == {"v": wire.PROTOCOL_VERSION, "type": "heartbeat"}


@pytest.mark.parametrize("fields", [
    {"ts": {"capture": 1.0}},  # a stage missing is fine: stages are optional
    {"seq": 0, "ts": {}, "key": False, "points": 0, "off": -0.5, "fb": True},
])
def test_valid_frame_fields_pass_as_they_are(fields):
    head = wire.header(MessageType.FRAME, **fields)
    assert wire.decode(wire.encode(head)).header == head


@pytest.mark.parametrize(("fields", "bad"), [
    ({"ts": {"capture": "soon"}}, "ts"),  # the attacks of issue 14: a stamp that is a string,
    ({"ts": {1: 2.0}}, "ts"),  # an integer stage name,
    ({"ts": {"sent": float("nan")}}, "ts"),  # NaN,
    ({"ts": [1.0]}, "ts"),  # not a map,
    ({"ts": {f"s{i}": 1.0 for i in range(40)}}, "ts"),  # too many stages
    ({"seq": "7"}, "seq"),  # a string sequence number,
    ({"seq": float("nan")}, "seq"),  # NaN,
    ({"seq": True}, "seq"),  # a bool is no integer
    ({"seq": -1}, "seq"),
    ({"src": 1 << 60}, "src"),
    ({"off": float("inf")}, "off"),
    ({"key": 1}, "key"),
    ({"points": -5}, "points"),
])
def test_a_frame_field_of_the_wrong_type_or_range_is_malformed(fields, bad):
    with pytest.raises(wire.FieldError, match=f"frame field '{bad}'") as caught:
        wire.decode(wire.encode({"v": wire.PROTOCOL_VERSION, "type": "frame", **fields}))
    assert caught.value.kind == "frame"


def test_control_fields_are_checked_too():
    for head in ({"type": "joined", "id": "3", "name": "x", "seat": 0},
                 {"type": "welcome", "id": 1, "seat": 0, "seats": 3, "members": [{"id": 2, "name": 5, "seat": 1}]},
                 {"type": "feedback", "to": 2, "r": [[1, float("nan"), 10]]},
                 {"type": "credit", "n": 10**6},
                 {"type": "time", "t0": "now"}):
        with pytest.raises(wire.FieldError):
            wire.decode(wire.encode({"v": wire.PROTOCOL_VERSION, **head}))


def test_other_version_is_refused_with_a_reason():
    raw = msgpack.packb({"v": wire.PROTOCOL_VERSION + 1, "type": "join"})
    with pytest.raises(wire.VersionError, match="protocol version 2 is not supported") as caught:
        wire.decode([raw])
    assert caught.value.refusal is None  # a join, not a refusal


def test_a_refusal_from_another_version_can_still_be_read():
    raw = msgpack.packb({"v": wire.PROTOCOL_VERSION + 1, "type": "refused", "reason": "we speak 2"})
    with pytest.raises(wire.VersionError) as caught:
        wire.decode([raw])
    assert caught.value.refusal == "we speak 2"


@pytest.mark.parametrize("frames", [
    [],
    [b"\xc1"],  # never-used msgpack byte
    [msgpack.packb([1, 2, 3])],  # not a map
    [msgpack.packb({"type": "frame"})],  # no version
    [msgpack.packb({"v": True, "type": "frame"})],  # bool is not a version
    [msgpack.packb({"v": 1, "type": "teleport"})],  # unknown type
    [msgpack.packb({"v": 1, "type": ["frame"]})],  # unhashable type field
    [b"\x81" + b"\xa1a" * 2],  # truncated / trailing garbage
    [msgpack.packb({"v": 1, "type": "frame", "pad": "x" * (wire.MAX_HEADER_BYTES + 1)})],
    [msgpack.packb({"v": 1, "type": "frame"})] + [b""] * (wire.MAX_PAYLOAD_FRAMES + 1),
])
def test_malformed_messages_raise_wire_error(frames):
    with pytest.raises(wire.WireError):
        wire.decode(frames)


def test_header_rejects_unknown_type():
    with pytest.raises(ValueError):
        wire.header("teleport")
