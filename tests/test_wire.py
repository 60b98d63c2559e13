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
    assert wire.decode([raw]).header["future_field"] == [1, 2]


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
