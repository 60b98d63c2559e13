"""The browser viewer against a real headless Chromium: page, stream, drawing, robustness."""

from __future__ import annotations

import io
import json
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("websockets", reason="the browser viewer needs the 'websockets' package")
from PIL import Image  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from benchmarks.browser_harness import HeadlessChromium, find_chromium  # noqa: E402
from render.browser import BrowserViewer, decode_frame, encode_frame  # noqa: E402
from render.room import Room  # noqa: E402

ROOM = Room(seats=3)
W, H = 640, 360
RED, BLUE, GREEN = (230, 30, 30), (30, 30, 230), (30, 220, 30)

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium binary found (install Debian's 'chromium' or set HOLOPORT_CHROMIUM)")


def person(seat: int, color: tuple[int, int, int], n: int = 20_000, seed: int = 0):
    """A person-sized solid colour cylinder standing at ``seat``, in room coordinates."""
    rng = np.random.default_rng(seed + seat)
    a = rng.uniform(0, 2 * np.pi, n)
    local = np.stack([0.22 * np.cos(a), rng.uniform(0.2, 1.7, n), 0.22 * np.sin(a)], 1)
    pose = ROOM.seat_pose(seat)
    positions = (local @ pose[:3, :3].T + pose[:3, 3]).astype(np.float32)
    return positions, np.tile(np.array(color, np.uint8), (n, 1))


def color_mask(img: np.ndarray, color: tuple[int, int, int], tol: int = 45) -> np.ndarray:
    return (np.abs(img.astype(np.int16) - np.array(color, np.int16)) <= tol).all(axis=2)


def page(viewer: BrowserViewer) -> dict:
    """The browser's own client entry (raw test clients send no hello)."""
    return next(c for c in viewer.clients() if c["hello"].get("ua"))


def draw(viewer: BrowserViewer, clouds) -> int:
    """Publish and wait until the browser has drawn that frame."""
    seq = viewer.publish(clouds)
    deadline = time.monotonic() + 20
    while page(viewer)["acked"] < seq:
        assert time.monotonic() < deadline, "the page did not draw the frame"
        time.sleep(0.02)
    return seq


def snapshot(viewer: BrowserViewer) -> np.ndarray:
    png = viewer.snapshot(timeout=20)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape == (H, W, 3)
    return img


@pytest.fixture(scope="module")
def live():
    """One viewer and one headless Chromium showing it, shared by the tests below."""
    viewer = BrowserViewer(room=ROOM).start()
    try:
        with HeadlessChromium(viewer.url + f"?size={W}x{H}", W, H):
            assert viewer.wait_clients(1, timeout=60), "headless Chromium did not connect"
            assert viewer.wait_page_stats(lambda p: "t" in p, timeout=30)
            yield viewer
            # stop() with the page still connected: the port must be closed on return
            viewer.stop()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", viewer.port), timeout=5)
    finally:
        viewer.stop()


def test_frame_round_trip_in_millimetres():
    a = (np.array([[0.0, 1.0, -2.5], [0.0004, np.nan, 0.0], [40.0, 0.0, 0.0]], np.float32),
         np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8))
    b = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    seq, clouds = decode_frame(encode_frame([a, b], 7))
    assert seq == 7 and [len(p) for p, _ in clouds] == [2, 0]  # the NaN point is dropped
    np.testing.assert_allclose(clouds[0][0], [[0, 1, -2.5], [32.767, 0, 0]], atol=5e-4)  # saturates
    np.testing.assert_array_equal(clouds[0][1], [[1, 2, 3], [7, 8, 9]])
    with pytest.raises(ValueError):
        encode_frame([(a[0], a[1].astype(np.float32))], 1)


@needs_chromium
def test_page_is_served_and_connects(live):
    html = urllib.request.urlopen(live.url, timeout=10).read().decode()
    assert "viewer.js" in html and "Enter VR" in html
    assert b"WebGL2" in urllib.request.urlopen(live.url + "viewer.js", timeout=10).read()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(live.url + "secret.txt", timeout=10)
    assert err.value.code == 404
    hello = page(live)["hello"]
    assert hello["gl"] and hello["draw"] in ("points", "splat"), hello
    # headless Chromium has no XR runtime: the page must not offer "Enter VR"
    assert hello["xr"] is False and hello["vr_button"] is False
    assert page(live)["page"]["width"] == W and page(live)["page"]["height"] == H
    # the room description arrives first on every connection
    with connect(live.url.replace("http", "ws") + "stream") as ws:
        msg = json.loads(ws.recv(timeout=10))
    assert msg["type"] == "room" and msg["room"]["seats"] == 3
    np.testing.assert_allclose(np.reshape(msg["room"]["seat_poses"][1], (4, 4)), ROOM.seat_pose(1))


@needs_chromium
def test_two_participants_are_drawn_at_their_seats(live, tmp_path):
    draw(live, [person(1, RED), person(2, BLUE)])
    img = snapshot(live)
    path = tmp_path / "browser.png"
    Image.fromarray(img).save(path)  # the screenshot, kept by pytest's tmp_path for a look
    assert path.stat().st_size > 1000
    red, blue = color_mask(img, RED), color_mask(img, BLUE)
    assert red.sum() > 500 and blue.sum() > 500, (red.sum(), blue.sum())
    # seat 1 stands to the right of the table from the default camera, seat 2 to the left
    red_x, blue_x = np.nonzero(red)[1].mean(), np.nonzero(blue)[1].mean()
    assert red_x > 0.55 * W and blue_x < 0.45 * W, (red_x, blue_x)
    assert live.wait_page_stats(lambda p: p.get("points") == 40_000, timeout=5)  # reported twice a second
    assert page(live)["errors"] == []


@needs_chromium
def test_gl_points_path_draws_the_same(live):
    """What a GPU (a headset) runs: gl.POINTS with a size from distance, forced here."""
    with HeadlessChromium(live.url + f"?size={W}x{H}&draw=points", W, H):
        assert live.wait_clients(2, timeout=60)
        deadline = time.monotonic() + 30
        while not [c for c in live.clients() if c["hello"].get("draw") == "points"]:
            assert time.monotonic() < deadline, "the gl.POINTS page did not say hello"
            time.sleep(0.05)
        other = next(c["id"] for c in live.clients() if c["hello"].get("draw") == "points")
        seq = live.publish([person(1, RED), person(2, BLUE)])
        while next(c["acked"] for c in live.clients() if c["id"] == other) < seq:
            assert time.monotonic() < deadline, "the gl.POINTS page did not draw"
            time.sleep(0.02)
        img = np.asarray(Image.open(io.BytesIO(live.snapshot(timeout=20, client=other))).convert("RGB"))
    red, blue = color_mask(img, RED), color_mask(img, BLUE)
    assert red.sum() > 500 and blue.sum() > 500, (red.sum(), blue.sum())
    assert np.nonzero(red)[1].mean() > 0.55 * W and np.nonzero(blue)[1].mean() < 0.45 * W


@needs_chromium
def test_new_frames_replace_old_ones(live):
    frames = page(live)["page"].get("frames", 0)
    draw(live, [person(1, GREEN), person(2, BLUE)])
    img = snapshot(live)
    assert color_mask(img, GREEN).sum() > 500 and color_mask(img, RED).sum() == 0
    # a burst far faster than the page draws: it gets fewer, newer frames, ending on the last
    sent = live.stats()["frames_sent"]
    for i in range(40):
        last = live.publish([person(1, RED if i < 39 else BLUE, n=5_000, seed=i)])
    deadline = time.monotonic() + 20
    while page(live)["acked"] < last:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert live.stats()["frames_sent"] - sent < 40 and page(live)["replaced"] > 0
    assert live.wait_page_stats(lambda p: p.get("frames", 0) > frames + 1, timeout=5)
    img = snapshot(live)
    assert color_mask(img, BLUE).sum() > 200 and color_mask(img, RED).sum() == 0


@needs_chromium
def test_malformed_messages_are_counted_and_ignored(live):
    before = live.stats()["malformed"]
    junk = ["not json", "[1, 2]", '{"type": "ack", "seq": "x"}', '{"type": "ack", "seq": 999999}',
            '{"type": "nope"}', '{"type": "stats", "frames": "many"}', b"\x00\x01junk", b"\x01\x00\x00\x00nopng"]
    with connect(live.url.replace("http", "ws") + "stream", max_size=2**24) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "room"
        for message in junk:
            ws.send(message)
        deadline = time.monotonic() + 10
        while live.stats()["malformed"] - before < len(junk):
            assert time.monotonic() < deadline, live.stats()
            time.sleep(0.02)
        # the server lives on: this client and the browser both get the next frame
        seq = draw(live, [person(1, RED), person(2, BLUE)])
        while True:
            message = ws.recv(timeout=10)
            if isinstance(message, bytes):
                got, clouds = decode_frame(message)
                ws.send(json.dumps({"type": "ack", "seq": got}))
                if got == seq:
                    break
    assert [len(p) for p, _ in clouds] == [20_000, 20_000]
    np.testing.assert_allclose(clouds[0][0], person(1, RED)[0], atol=6e-4)


@needs_chromium
def test_measure_browser_fps_reports_the_pages_count():
    from benchmarks.browser_harness import measure_browser_fps

    result = measure_browser_fps(20_000, 1.0, width=W, height=H, warmup=0.5)
    assert result["points"] == 20_000 and result["frames"] > 0 and result["fps"] > 0
    assert result["resolution"] == f"{W}x{H}" and result["renderer"] == "browser"


def test_stop_closes_connections_and_frees_the_port():
    viewer = BrowserViewer(room=ROOM).start()
    port = viewer.port
    with connect(f"ws://127.0.0.1:{port}/stream") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "room"
        viewer.publish([person(0, RED, n=100)])
        assert isinstance(ws.recv(timeout=10), bytes)
        viewer.stop()
        with pytest.raises(Exception):  # noqa: B017 - closed, whichever way the library says it
            ws.recv(timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    viewer.stop()  # twice is harmless


def test_join_web_streams_the_remote_participant_at_its_seat():
    """Real processes: a hub, ana, and ben with --web; a WebSocket client on ben's viewer
    gets ana's points in room coordinates, standing at ana's seat."""
    import signal

    from holoport.endpoints import free_tcp_endpoint
    from tests.conftest import spawn

    endpoint = free_tcp_endpoint()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = spawn("hub", "--bind", endpoint, "--seats", "4")
    procs = []
    try:
        time.sleep(0.5)
        common = ["--hub", endpoint, "--duration", "25", "--fps", "5"]
        procs.append(spawn("join", *common, "--name", "ana", "--body", "1"))
        time.sleep(1.0)
        procs.append(spawn("join", *common, "--name", "ben", "--web", str(port)))
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/stream", max_size=2**26, open_timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "ben's viewer never listened"
                time.sleep(0.3)
        with ws:
            message = json.loads(ws.recv(timeout=10))
            room = message["room"]
            assert message["type"] == "room" and room["seats"] == 4
            clouds = []
            while not clouds:
                message = ws.recv(timeout=15)
                if isinstance(message, bytes):
                    seq, clouds = decode_frame(message)
                    ws.send(json.dumps({"type": "ack", "seq": seq}))
        (positions, colors), = clouds
        assert len(positions) > 5_000 and colors.shape == positions.shape
        # ana was admitted first: seat 0, and her points stand on the floor around it
        seat = np.array(room["seat_poses"][0]).reshape(4, 4)[:3, 3]
        centre = positions.mean(axis=0)
        assert np.hypot(centre[0] - seat[0], centre[2] - seat[2]) < 0.5
        assert positions[:, 1].min() > -0.05 and 1.2 < positions[:, 1].max() < 2.2
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.communicate(timeout=30)
        hub.send_signal(signal.SIGINT)
        hub.communicate(timeout=10)
