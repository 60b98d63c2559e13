"""Intel RealSense through pyrealsense2, without a camera: pyrealsense2's own software device
stands in for one (depth and colour sensors with known lenses, frames pushed by hand), and
what RealSenseSource yields is checked against what was pushed."""

from __future__ import annotations

import importlib.metadata
import itertools
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 (pip install holoport[realsense]) is not installed")

from capture import SyntheticCamera  # noqa: E402
from capture.lens import register  # noqa: E402
from capture.realsense import RealSenseError, RealSenseSource, connected_serials  # noqa: E402
from capture.sequences import ImageSequence  # noqa: E402
from capture.types import Intrinsics  # noqa: E402

FPS = 30
T0_MS = 5000.0  # the software device's clock at the first frame


def rs_intrinsics(k: Intrinsics, model: str = "brown_conrady") -> object:
    out = rs.intrinsics()
    out.width, out.height, out.fx, out.fy, out.ppx, out.ppy = k.width, k.height, k.fx, k.fy, k.cx, k.cy
    out.model = getattr(rs.distortion, model)
    out.coeffs = [*k.distortion, 0.0, 0.0, 0.0, 0.0, 0.0][:5]
    return out


class SoftwareCamera:
    """A RealSense made of pyrealsense2's software device: a depth sensor (z16) and a colour
    sensor with the given lenses, depth units and depth-to-colour extrinsics; ``push``
    feeds one depth + colour pair, stamped as a camera would stamp it."""

    def __init__(self, depth_k: Intrinsics, color_k: Intrinsics, depth_scale: float,
                 depth_to_color: np.ndarray | None = None, color_format: str = "rgb8",
                 color_model: str = "brown_conrady", serial: str = "SW-0001") -> None:
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        self.device.create_matcher(rs.matchers.default)
        self.depth_scale, self.color_format = depth_scale, color_format
        self.depth_sensor = self.device.add_sensor("Depth")
        self.depth_sensor.add_read_only_option(rs.option.depth_units, depth_scale)
        self.color_sensor = self.device.add_sensor("Color")
        self.depth_profile = self._stream(self.depth_sensor, rs.stream.depth, 0, rs.format.z16, 2,
                                          rs_intrinsics(depth_k))
        self.color_profile = self._stream(self.color_sensor, rs.stream.color, 1, getattr(rs.format, color_format), 3,
                                          rs_intrinsics(color_k, color_model))
        e = rs.extrinsics()
        m = np.eye(4) if depth_to_color is None else depth_to_color
        e.rotation = [float(x) for x in m[:3, :3].T.ravel()]  # column-major
        e.translation = [float(x) for x in m[:3, 3]]
        self.depth_profile.register_extrinsics_to(self.color_profile, e)
        # librealsense's syncer matches depth and colour within a frame period, which it reads
        # from each frame's actual-fps metadata (fps x 1000) as a real camera reports it;
        # without it a software device's frames are not matched into framesets reliably.
        for sensor in (self.depth_sensor, self.color_sensor):
            sensor.set_metadata(rs.frame_metadata_value.actual_fps, FPS * 1000)
        self._keep: list[np.ndarray] = []

    @staticmethod
    def _stream(sensor, kind, uid, fmt, bpp, k) -> object:
        s = rs.video_stream()
        s.type, s.uid, s.index, s.fmt, s.bpp, s.fps = kind, uid, 0, fmt, bpp, FPS
        s.width, s.height, s.intrinsics = k.width, k.height, k
        return rs.video_stream_profile(sensor.add_video_stream(s, True))

    def push(self, number: int, depth: np.ndarray | None, color: np.ndarray | None) -> None:
        """Frame ``number`` of each stream given (None: that stream's frame is not sent)."""
        t_ms = T0_MS + number * 1000.0 / FPS
        if color is not None and self.color_format == "bgr8":
            color = color[..., ::-1]
        for sensor, profile, image in ((self.depth_sensor, self.depth_profile, depth),
                                       (self.color_sensor, self.color_profile, color)):
            if image is not None:
                self._push_one(sensor, profile, np.ascontiguousarray(image), number, t_ms)

    def _push_one(self, sensor, profile, image, number, t_ms) -> None:
        self._keep.append(image)
        f = rs.software_video_frame()
        f.pixels, f.bpp = image, image.itemsize * (image.shape[2] if image.ndim == 3 else 1)
        f.stride = image.shape[1] * f.bpp
        f.frame_number, f.timestamp, f.domain, f.profile = number, t_ms, rs.timestamp_domain.hardware_clock, profile
        if sensor is self.depth_sensor:
            f.depth_units = self.depth_scale
        sensor.on_video_frame(f)


def small(k: Intrinsics, factor: int) -> Intrinsics:
    return Intrinsics(k.width // factor, k.height // factor, k.fx / factor, k.fy / factor,
                      (k.cx + 0.5) / factor - 0.5, (k.cy + 0.5) / factor - 0.5)


@pytest.fixture(scope="module")
def person() -> list:
    """Six frames of the synthetic person at 30 fps, at half resolution (320x288)."""
    cam = SyntheticCamera(intrinsics=small(SyntheticCamera().intrinsics, 2))
    return [cam.read(i / FPS) for i in range(6)]


def test_synthetic_person_arrives_as_pushed(person):
    """Depth bit for bit, the depth lens, scale and clock, a pose; colour from the same
    viewpoint lands on its own pixel (librealsense's align may take its neighbour's)."""
    k = person[0].intrinsics
    cam = SoftwareCamera(k, k, person[0].depth_scale)
    pose = np.diag([1.0, -1.0, -1.0, 1.0])
    pose[:3, 3] = 0.1, 1.2, 2.0
    src = RealSenseSource(device=cam.device, pose=pose, registration="align")
    assert src.intrinsics == k and src.depth_scale == 0.001
    frames = []
    for i, f in enumerate(person):
        cam.push(i, f.depth, f.color)
        frames.append(src.read())
    src.close()
    for i, (got, sent) in enumerate(zip(frames, person, strict=True)):
        assert got.index == i and got.meta["depth_frame_number"] == got.meta["color_frame_number"] == i
        np.testing.assert_array_equal(got.depth, sent.depth)
        assert got.depth.dtype == np.uint16 and got.color.dtype == np.uint8 and got.color.shape == sent.color.shape
        assert got.intrinsics == k and got.depth_scale == 0.001
        assert got.timestamp == pytest.approx((T0_MS + i * 1000 / FPS) / 1000, abs=1e-9)
        assert got.meta["timestamp_domain"] == "hardware_clock" and got.meta["serial"] == "SW-0001"
        np.testing.assert_array_equal(got.camera_pose, pose)
        # rs.align copies, for each depth pixel, the last colour pixel its footprint covers:
        # the pixel itself or the one right/below of it (float rounding decides)
        valid = sent.depth[:-1, :-1] > 0
        same = np.zeros_like(valid)
        for dy in (0, 1):
            for dx in (0, 1):
                shifted = sent.color[dy:dy + k.height - 1, dx:dx + k.width - 1]
                same |= np.all(got.color[:-1, :-1] == shifted, axis=-1)
        assert same[valid].mean() > 0.999
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(frames))


@pytest.fixture(scope="module")
def slambook(data_dir) -> ImageSequence:
    folder = data_dir / "rgbd" / "slambook"
    if not folder.is_dir():
        pytest.skip(f"no slambook sequence at {folder}")
    return ImageSequence(folder)


@pytest.mark.parametrize("color_format", ["rgb8", "bgr8"])
def test_real_images_keep_their_lens_scale_and_color(slambook, color_format):
    """The slambook's own 640x480 images and calibration (fx 518, fy 519, cx 325.5, cy
    253.5, 1 mm), colour registered by capture.lens through identity extrinsics: the pushed
    colour exactly, whatever channel order the camera sends, and the pushed depth except
    where capture.lens's occlusion test (a z-buffer at half resolution) drops a point just
    behind a depth edge."""
    sent = list(itertools.islice(slambook, 3))
    k = sent[0].intrinsics
    cam = SoftwareCamera(k, k, sent[0].depth_scale, color_format=color_format)
    with RealSenseSource(device=cam.device, registration="extrinsics") as src:
        got = []
        for i, f in enumerate(sent):
            cam.push(i, f.depth, f.color)
            got.append(src.read())
    for g, s in zip(got, sent, strict=True):
        assert g.intrinsics == k and g.depth_scale == s.depth_scale == 0.001
        color, depth = register(s.depth, s.depth_scale, k, s.color, k, np.eye(4))
        np.testing.assert_array_equal(g.depth, depth)
        np.testing.assert_array_equal(g.color, color)
        kept = g.depth > 0
        np.testing.assert_array_equal(g.depth[kept], s.depth[kept])
        np.testing.assert_array_equal(g.color[kept], s.color[kept])
        assert kept.sum() > 0.9 * (s.depth > 0).sum()


def brown_conrady(x: np.ndarray, y: np.ndarray, c: tuple) -> tuple[np.ndarray, np.ndarray]:
    k1, k2, p1, p2, k3 = c
    r2 = x * x + y * y
    f = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    return x * f + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * f + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)


BROWN_CONRADY = (0.08, -0.05, 0.002, -0.001, 0.01)


@pytest.mark.parametrize(("registration", "coeffs", "tolerance"), [
    ("extrinsics", BROWN_CONRADY, 0.75),
    ("auto", BROWN_CONRADY, 0.75),
    ("align", (), 2.0),  # rs.align takes the last colour pixel of a depth pixel's 1.5-pixel footprint
])
def test_color_is_registered_through_both_lenses_and_the_extrinsics(registration, coeffs, tolerance):
    """A slanted wall seen by a depth camera and by a narrower colour camera 5 cm to its
    side, turned 3 degrees, with its own lens. Each colour pixel holds its own coordinates,
    so the registered colour says which colour pixel each depth pixel took: it must be where
    the depth point projects (computed here independently). A transposed rotation, a
    reversed extrinsic or the wrong lens puts it several pixels off; what the colour camera
    cannot see gets no colour."""
    dk = Intrinsics(160, 120, 150.0, 151.0, 79.25, 60.5)
    ck = Intrinsics(200, 150, 230.0, 231.0, 101.0, 74.0, coeffs)
    a = np.radians(3.0)
    depth_to_color = np.eye(4)
    depth_to_color[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    depth_to_color[:3, 3] = -0.05, 0.004, 0.002
    u, v = np.meshgrid(np.arange(dk.width, dtype=np.float64), np.arange(dk.height, dtype=np.float64))
    x, y = (u - dk.cx) / dk.fx, (v - dk.cy) / dk.fy
    z = 1.5 / (1 + 0.3 * x)  # the plane z = 1.5 - 0.3 X: slanted, so depth varies across the image
    depth = np.rint(z / 0.0005).astype(np.uint16)  # half-millimetre units
    zq = depth * 0.0005
    p = np.stack([x * zq, y * zq, zq, np.ones_like(zq)], -1) @ depth_to_color.T
    xd, yd = brown_conrady(p[..., 0] / p[..., 2], p[..., 1] / p[..., 2], (*coeffs, 0, 0, 0, 0, 0)[:5])
    expect_u, expect_v = xd * ck.fx + ck.cx, yd * ck.fy + ck.cy
    cu, cv = np.meshgrid(np.arange(ck.width), np.arange(ck.height))
    color = np.stack([cu, cv, np.full_like(cu, 200)], -1).astype(np.uint8)  # R = column, G = row

    cam = SoftwareCamera(dk, ck, 0.0005, depth_to_color)
    with RealSenseSource(device=cam.device, registration=registration) as src:
        cam.push(0, depth, color)
        f = src.read()
    assert f.meta["registration"] == ("extrinsics" if registration == "auto" else registration)
    assert f.intrinsics == dk and f.depth_scale == 0.0005 and f.color.shape == (dk.height, dk.width, 3)
    np.testing.assert_allclose(src.depth_to_color, depth_to_color, atol=1e-6)
    colored = f.color[..., 2] == 200
    inside = (expect_u > 1) & (expect_u < ck.width - 2) & (expect_v > 1) & (expect_v < ck.height - 2)
    outside = (expect_u < -2) | (expect_u > ck.width + 1) | (expect_v < -2) | (expect_v > ck.height + 1)
    assert outside.mean() > 0.05 and inside.mean() > 0.5
    assert colored[inside].mean() > 0.99 and not colored[outside].any()
    err = np.hypot(f.color[..., 0] - expect_u, f.color[..., 1] - expect_v)[colored & inside]
    assert err.max() < tolerance
    if f.meta["registration"] == "extrinsics":  # depth is dropped where there is no colour
        assert not f.depth[outside].any() and (f.depth[inside] == depth[inside]).all()
    else:  # rs.align keeps every depth pixel
        np.testing.assert_array_equal(f.depth, depth)


def test_a_lens_capture_cannot_model_is_left_to_librealsense():
    """A colour lens reported as inverse Brown-Conrady with coefficients (as D400 colour
    streams can be): "auto" registers it with rs.align, "extrinsics" refuses it plainly."""
    k = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)
    ck = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5, (0.05, 0.01, 0.0, 0.0, 0.0))
    cam = SoftwareCamera(k, ck, 0.001, color_model="inverse_brown_conrady")
    with pytest.raises(RealSenseError, match="inverse_brown_conrady"):
        RealSenseSource(device=cam.device, registration="extrinsics")
    cam = SoftwareCamera(k, ck, 0.001, color_model="inverse_brown_conrady")
    with RealSenseSource(device=cam.device) as src:
        cam.push(0, np.full((48, 64), 1500, np.uint16), np.full((48, 64, 3), 90, np.uint8))
        f = src.read()
    assert f.meta["registration"] == "align" and f.meta["color_distortion_model"] == "inverse_brown_conrady"
    assert f.meta["color_distortion_coeffs"] == [0.05, 0.01, 0.0, 0.0, 0.0]
    assert (f.color[10:-10, 10:-10] == 90).all() and (f.depth == 1500).all()


def test_depth_distortion_reaches_the_intrinsics():
    """A depth lens with Brown-Conrady coefficients: they arrive in Intrinsics.distortion
    (OpenCV order k1 k2 p1 p2 k3) and in the frame's meta. (The device given by a factory.)"""
    k = Intrinsics(64, 48, 60.0, 61.0, 31.5, 23.5, (0.1, -0.02, 0.001, 0.002, 0.003))
    cam = SoftwareCamera(k, k, 0.001)
    with RealSenseSource(device=lambda: cam.device) as src:
        cam.push(0, np.full((48, 64), 900, np.uint16), np.zeros((48, 64, 3), np.uint8))
        f = src.read()
    assert src.intrinsics == f.intrinsics == k
    assert f.meta["distortion_model"] == "brown_conrady" and f.meta["distortion_coeffs"] == list(k.distortion)


def recording_suffix() -> str:
    """pyrealsense2 2.58+ records ROS2 .db3 (and refuses .bag); earlier versions ROS1 .bag."""
    major, minor = (int(x) for x in importlib.metadata.version("pyrealsense2").split(".")[:2])
    return ".db3" if (major, minor) >= (2, 58) else ".bag"


def test_recording_plays_back_frame_for_frame(person, tmp_path):
    """What a software device streams is recorded by librealsense (record_to) and played
    back from the file: every frame, in order, bit for bit, with its lens, scale and clock;
    looping starts over with the clock going on; realtime paces it."""
    path = tmp_path / f"person{recording_suffix()}"
    k = person[0].intrinsics
    cam = SoftwareCamera(k, k, 0.001, serial="REC-42")
    with RealSenseSource(device=cam.device, record_to=path, registration="align") as src:
        live = []
        for i, f in enumerate(person):
            cam.push(i, f.depth, f.color)
            live.append(src.read())
    assert path.is_file()

    with RealSenseSource(file=path, registration="align") as src:
        assert src.intrinsics == k and src.depth_scale == 0.001 and src.fps == FPS
        played = list(src)
    assert [p.meta["depth_frame_number"] for p in played] == list(range(len(person)))
    for i, (p, sent, lv) in enumerate(zip(played, person, live, strict=True)):
        np.testing.assert_array_equal(p.depth, sent.depth)
        np.testing.assert_array_equal(p.color, lv.color)  # the same registration as live
        assert p.intrinsics == k and p.depth_scale == 0.001 and p.meta["serial"] == "REC-42"
        assert p.timestamp == pytest.approx(lv.timestamp, abs=1e-6) and p.index == i
        assert p.meta["file"] == path.name

    with RealSenseSource(file=path, loop=True) as src:
        looped = [src.read() for _ in range(2 * len(person) + 1)]
    stamps = [f.timestamp for f in looped]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    for a, b in zip(looped, looped[len(person):], strict=False):
        np.testing.assert_array_equal(a.depth, b.depth)

    t0 = time.monotonic()
    with RealSenseSource(file=path, realtime=True) as src:
        assert len(list(src)) == len(person)
    assert time.monotonic() - t0 >= 0.9 * (len(person) - 1) / FPS

    t0 = time.monotonic()  # closed halfway, while the playback waits for its reader
    with RealSenseSource(file=path) as src:
        src.read()
    assert time.monotonic() - t0 < 2.0

    from holoport.point_sources import open_points  # what join/record take: the file as a participant

    source = open_points(str(path), realtime=False, loop=False, crop="none")
    try:
        frame = source.read_rgbd()
        positions, colors = source.cut(frame)
    finally:
        source.close()
    np.testing.assert_array_equal(frame.depth[frame.depth > 0], played[0].depth[frame.depth > 0])
    in_range = (frame.depth > 0) & (frame.depth * frame.depth_scale >= 0.2) & (frame.depth * frame.depth_scale <= 6)
    assert len(positions) == int(in_range.sum()) > 0.9 * frame.depth.size and colors.shape == positions.shape


def test_a_file_from_rs_recorder_plays_back(person, tmp_path):
    """A recording made by pyrealsense2's own recorder around the software device, its
    sensors started by hand (no pipeline), plays back whole."""
    path = tmp_path / f"sensors{recording_suffix()}"
    k = person[0].intrinsics
    cam = SoftwareCamera(k, k, 0.001)
    recorder = rs.recorder(str(path), cam.device)
    syncer = rs.syncer(10)
    for sensor, profile in ((cam.depth_sensor, cam.depth_profile), (cam.color_sensor, cam.color_profile)):
        sensor.open(profile)
        sensor.start(syncer)
    for i, f in enumerate(person):
        cam.push(i, f.depth, f.color)
    for sensor in (cam.depth_sensor, cam.color_sensor):
        sensor.stop()
        sensor.close()
    recorder.pause()
    del recorder  # closes the file
    with RealSenseSource(file=path) as src:
        played = list(src)
    assert [p.meta["depth_frame_number"] for p in played] == list(range(len(person)))
    for p, sent in zip(played, person, strict=True):
        kept = p.depth > 0
        np.testing.assert_array_equal(p.depth[kept], sent.depth[kept])
        assert kept.sum() > 0.95 * (sent.depth > 0).sum() and p.meta["registration"] == "extrinsics"


def test_depth_waits_for_its_own_color(person):
    """A colour frame that comes late is waited for, and paired with its own depth frame,
    not the previous colour; depth frames whose colour never comes are never delivered (the
    read says so after its timeout), and the next complete pair comes through."""
    k = person[0].intrinsics
    cam = SoftwareCamera(k, k, 0.001)
    depth = [f.depth for f in person]
    color = [np.full((k.height, k.width, 3), 40 * i + 20, np.uint8) for i in range(len(person))]  # one per frame
    with RealSenseSource(device=cam.device, registration="align", timeout=0.5) as src:
        cam.push(0, depth[0], color[0])
        first = src.read()
        cam.push(1, depth[1], None)
        late = threading.Timer(0.2, cam.push, (1, None, color[1]))
        late.start()
        second = src.read()
        late.join()
        cam.push(2, depth[2], None)
        cam.push(3, depth[3], None)
        with pytest.raises(RealSenseError, match="no (matching depth and colour )?frames"):
            src.read()
        cam.push(4, depth[4], color[4])
        third = src.read()
    for f, i in ((first, 0), (second, 1), (third, 4)):
        assert f.meta["depth_frame_number"] == f.meta["color_frame_number"] == i
        np.testing.assert_array_equal(f.depth, depth[i])
        assert (f.color[:-1, :-1][depth[i][:-1, :-1] > 0] == 40 * i + 20).all()  # its own colour


def test_a_silent_camera_raises_instead_of_hanging():
    k = Intrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)
    cam = SoftwareCamera(k, k, 0.001)
    with RealSenseSource(device=cam.device, timeout=0.3) as src:
        t0 = time.monotonic()
        with pytest.raises(RealSenseError, match="no frames from RealSense SW-0001 in 0.3 s"):
            src.read()
    assert time.monotonic() - t0 < 2.0


def test_no_camera_is_a_clear_error_not_a_hang():
    if connected_serials():
        pytest.skip("a RealSense camera is connected")
    t0 = time.monotonic()
    from holoport.point_sources import open_points

    with pytest.raises(RealSenseError, match="no Intel RealSense camera is connected"):
        open_points("realsense")
    with pytest.raises(RealSenseError, match="no Intel RealSense camera is connected"):
        RealSenseSource()
    with pytest.raises(RealSenseError, match="no Intel RealSense camera is connected"):
        RealSenseSource("123456789012", 848, 480, 30)
    assert time.monotonic() - t0 < 5.0


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="registration"):
        RealSenseSource(registration="nearest")
    with pytest.raises(ValueError, match="only a recording can loop"):
        RealSenseSource(loop=True)
    with pytest.raises(FileNotFoundError):
        RealSenseSource(file="/nonexistent/x.db3")


def test_capture_imports_without_pyrealsense2_and_names_the_extra():
    """``import capture`` (and this module) must not need pyrealsense2; using the source
    without it says which extra to install."""
    code = ("import sys; sys.modules['pyrealsense2'] = None\n"
            "import capture, capture.realsense\n"
            "try:\n    capture.realsense.RealSenseSource()\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install holoport[realsense]" in out.stdout
