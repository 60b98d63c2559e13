"""Intel RealSense cameras, live or from their recordings, through pyrealsense2 (the optional
extra: ``pip install holoport[realsense]``).

Three kinds of device:

- a live camera (``serial``, or the first one connected), depth z16 + colour rgb8, through
  librealsense's pipeline;
- an ``rs.software_device`` (or a function making one), frames pushed by hand into
  librealsense, through the same pipeline: what the tests run is what a camera runs;
- a recording (``file``): ``.db3`` (ROS2, what pyrealsense2 2.58+ writes) or ``.bag`` (ROS1,
  what older versions wrote, and what 2.59 still plays), played frame by frame through its
  playback device's sensors (non-real-time: no frame is dropped however slowly it is read;
  ``realtime=True`` paces it as the base class paces every recording).

Colour is registered to depth, keeping the depth stream's intrinsics, in one of two ways:

- ``"extrinsics"``: ``capture.lens.register`` through both lenses and the streams'
  extrinsics; depth is set to 0 where the colour camera does not see the point (outside
  its image, or hidden behind something nearer). Only the lens models capture.lens knows
  (RealSense's ``none`` and ``brown_conrady``, or any model with zero coefficients).
- ``"align"``: librealsense's ``rs.align`` (any lens model RealSense reports; depth kept
  bit for bit; pixels the colour camera does not see stay black (0, 0, 0)). Measured with
  pyrealsense2 2.59.1 here: its SSE implementation ignores a colour lens's
  ``brown_conrady`` coefficients (pixels off at the edges of a 200x150 image with k1 = 0.08,
  where capture.lens stays within the 0.75 px that tests/test_realsense.py asserts) and
  shifts colour by about half a pixel.

``"auto"`` (the default) takes ``"extrinsics"`` whenever capture.lens knows the colour lens
and ``"align"`` otherwise (e.g. a D400 colour stream reported as ``inverse_brown_conrady``
with non-zero coefficients).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from capture.rgbd_source import RGBDSource
from capture.types import Intrinsics, RGBDFrame

EXTRA = "pip install holoport[realsense]"
REGISTRATIONS = ("auto", "extrinsics", "align")
#: RealSense lens models that are OpenCV's (coefficients k1 k2 p1 p2 k3, the same order):
#: ``none`` and ``brown_conrady``. Any other model is only accepted with all-zero coefficients.
_OPENCV_MODELS = ("none", "brown_conrady")


class RealSenseError(RuntimeError):
    """No camera, a camera or recording that will not stream: said plainly, never a hang."""


def import_pyrealsense2() -> Any:
    """pyrealsense2, imported only when a RealSense source is used (``import capture`` must not need it)."""
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise ImportError(f"Intel RealSense cameras need pyrealsense2, an optional extra: {EXTRA}") from e
    return rs


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense cameras connected now (empty without any)."""
    rs = import_pyrealsense2()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


def lens_is_supported(k: Any) -> bool:
    """Whether capture's lens models can represent an ``rs.intrinsics`` exactly."""
    return _model_name(k.model) in _OPENCV_MODELS or not any(k.coeffs)


def intrinsics_from_rs(k: Any) -> Intrinsics:
    """``capture.types.Intrinsics`` from an ``rs.intrinsics``.

    RealSense puts pixel centres at integer coordinates, as capture does, so ppx/ppy are cx/cy
    as they are. Its coefficient order (k1 k2 p1 p2 k3) is OpenCV's; only models that are
    OpenCV's formula (or any model with zero coefficients: a pinhole) can be represented,
    since a wrong model would place points centimetres off at the image edges.
    """
    coeffs = tuple(_f32(c) for c in k.coeffs)
    if not lens_is_supported(k):
        raise RealSenseError(f"lens model {_model_name(k.model)} with coefficients {coeffs} is not one capture "
                             f"can project through (supported: {', '.join(_OPENCV_MODELS)})")
    distortion = coeffs if any(coeffs) else ()
    return Intrinsics(int(k.width), int(k.height), _f32(k.fx), _f32(k.fy), _f32(k.ppx), _f32(k.ppy),
                      distortion, "brown_conrady")


def _f32(x: float) -> float:
    """A float32 from librealsense as the shortest decimal that is that float32 (0.001, not
    0.0010000000474974513): what the calibration was written as."""
    return float(str(np.float32(x)))


def _model_name(model: Any) -> str:
    return str(model).rsplit(".", 1)[-1]


def extrinsics_matrix(e: Any) -> np.ndarray:
    """4x4 transform of an ``rs.extrinsics``, whose rotation is stored column-major."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(e.rotation, np.float64).reshape(3, 3).T
    m[:3, 3] = e.translation
    return m


def _keep_alive_and_add(rs: Any, device: Any, ctx: Any) -> list:
    """Add a software device to ``ctx`` so that a pipeline can select it.

    In pyrealsense2 2.56.5 and 2.59.1 a context keeps only a weak reference to the device's
    info, which nothing else holds: ``add_to`` announces the device and ``query_devices()``
    then no longer lists it (a pipeline says "No device connected"). The device list the
    context hands its devices-changed callback holds that info, so keeping it keeps the
    device listed.
    """
    added: list = []
    ctx.set_devices_changed_callback(lambda info: added.append(info.get_new_devices()))
    device.add_to(ctx)
    return added


class RealSenseSource(RGBDSource):
    """An Intel RealSense camera, recording or software device as registered ``RGBDFrame``s.

    ``width``/``height``/``fps`` choose a live camera's depth mode (and its colour mode,
    unless ``color_size`` gives another); a recording or software device streams what it
    has. ``pose`` places the camera in the participant's frame (identity by default).
    ``record_to`` records what a live camera or software device streams (librealsense's
    recorder: ``.db3`` for pyrealsense2 2.58+, ``.bag`` before). ``timeout`` bounds every
    wait for a frame, so a camera that stops streaming raises instead of hanging.
    ``registration``: "auto", "extrinsics" or "align" (see the module's docstring).
    """

    name = "realsense"

    def __init__(self, serial: str | None = None, width: int = 640, height: int = 480, fps: int = 30, *,
                 color_size: tuple[int, int] | None = None, file: str | Path | None = None,
                 device: Any | Callable[[], Any] | None = None, pose: np.ndarray | None = None,
                 registration: str = "auto", realtime: bool = False, loop: bool = False,
                 record_to: str | Path | None = None, timeout: float = 5.0) -> None:
        rs = import_pyrealsense2()
        super().__init__(realtime=realtime, loop=loop)
        if registration not in REGISTRATIONS:
            raise ValueError(f"registration must be one of {REGISTRATIONS}, got {registration!r}")
        if file is not None and (device is not None or serial is not None or record_to is not None):
            raise ValueError("a recording is played on its own: no serial, device or record_to with file")
        if device is not None and serial is not None:
            raise ValueError("give a serial or a software device, not both")
        if loop and file is None:
            raise ValueError("only a recording can loop")
        self._rs = rs
        self.registration = registration
        self.pose = np.eye(4) if pose is None else np.asarray(pose, np.float64)
        if self.pose.shape != (4, 4):
            raise ValueError(f"pose must be 4x4, got {self.pose.shape}")
        self.timeout = float(timeout)
        self.file = None if file is None else Path(file)
        self._pipe = None  # a camera or software device: librealsense's pipeline
        self._playback = None  # a recording: its playback device's sensors into a syncer
        self._sensors: list = []
        self._syncer = None
        self._device_keepalive: list = []
        self._lone: dict[str, Any] = {}  # a depth or colour frame the syncer delivered alone
        self._composer = None
        self._last_depth_ms: float | None = None
        self._ctx = rs.context()
        if self.file is not None:
            if not self.file.is_file():
                raise FileNotFoundError(f"no RealSense recording at {self.file}")
            self.name = self.file.name
            self._open_file()
            return

        config = rs.config()
        if device is not None:
            device = device() if callable(device) else device  # a factory, or the device
            if not device.supports(rs.camera_info.serial_number):
                device.register_info(rs.camera_info.serial_number, f"software-{id(device):x}")
            serial = device.get_info(rs.camera_info.serial_number)
            self._device_keepalive = [device, _keep_alive_and_add(rs, device, self._ctx)]
        found = [d.get_info(rs.camera_info.serial_number) for d in self._ctx.query_devices()]
        if device is not None and serial not in found:
            raise RealSenseError(f"pyrealsense2 does not list the software device {serial} added to its context")
        if not found:
            raise RealSenseError("no Intel RealSense camera is connected (librealsense found none)")
        if serial is not None and serial not in found:
            raise RealSenseError(f"no RealSense camera with serial {serial}; connected: {', '.join(found)}")
        if serial is not None:
            config.enable_device(serial)
        if device is None:  # a live camera converts to these; a software device streams what it has
            cw, ch = color_size or (width, height)
            config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
            config.enable_stream(rs.stream.color, cw, ch, rs.format.rgb8, fps)
        else:
            config.enable_stream(rs.stream.depth, rs.format.z16, 0)  # (stream, format) alone would be (stream, index)
            config.enable_stream(rs.stream.color)
        if record_to is not None:
            config.enable_record_to_file(str(record_to))
        self._pipe = rs.pipeline(self._ctx)
        try:
            profile = self._pipe.start(config)
        except RuntimeError as e:
            raise RealSenseError(f"the RealSense camera would not start streaming: {e}") from e
        try:
            self._configure(profile.get_device(), profile.get_stream(rs.stream.depth),
                            profile.get_stream(rs.stream.color))
        except BaseException:
            self.close()
            raise

    def _open_file(self) -> None:
        """Play a recording through its playback device's sensors into a syncer.

        Not through a pipeline: a pipeline starts playback in real time, and switching it to
        frame-by-frame once started loses the first frames now and then (measured with
        2.59.1); a pipeline over a playback device made non-real-time beforehand plays
        without waiting for its reader and keeps only the last frame. Sensors started into an
        ``rs.syncer`` on a non-real-time playback wait for the reader: no frame is lost.
        """
        rs = self._rs
        try:  # a context of its own: one context loads a file once
            self._playback = rs.playback(rs.context().load_device(str(self.file)))
        except RuntimeError as e:
            raise RealSenseError(f"{self.file}: not a RealSense recording this pyrealsense2 reads ({e})") from e
        self._playback.set_real_time(False)  # the base class paces it when realtime
        chosen: dict[str, tuple[Any, Any]] = {}
        for sensor in self._playback.query_sensors():
            for p in sensor.get_stream_profiles():
                if p.stream_type() == rs.stream.depth and p.format() == rs.format.z16:
                    chosen.setdefault("depth", (sensor, p))
                elif p.stream_type() == rs.stream.color:
                    chosen.setdefault("color", (sensor, p))
        if set(chosen) != {"depth", "color"}:
            self.close()
            raise RealSenseError(f"{self.file}: a recording with z16 depth and colour is needed, "
                                 f"it has {', '.join(sorted(chosen)) or 'neither'}")
        by_sensor: dict[int, tuple[Any, list]] = {}
        for sensor, p in chosen.values():
            by_sensor.setdefault(id(sensor), (sensor, []))[1].append(p)
        try:
            self._configure(self._playback, chosen["depth"][1], chosen["color"][1])
            self._syncer = rs.syncer(2)
            for sensor, profiles in by_sensor.values():
                sensor.open(profiles)
                self._sensors.append(sensor)
            # paused while the sensors start: a sensor started after playback began misses frames
            self._playback.pause()
            for sensor in self._sensors:
                sensor.start(self._syncer)
            self._playback.resume()
        except BaseException:
            self.close()
            raise

    def _configure(self, dev: Any, depth_stream: Any, color_stream: Any) -> None:
        """Read the lenses, extrinsics, depth scale and formats of the two streams."""
        rs = self._rs
        depth_profile, color_profile = depth_stream.as_video_stream_profile(), color_stream.as_video_stream_profile()
        if depth_profile.format() != rs.format.z16:
            raise RealSenseError(f"depth stream is {depth_profile.format()}, not z16")
        self._color_format = _model_name(color_profile.format())
        if self._color_format not in ("rgb8", "bgr8", "rgba8", "bgra8"):
            raise RealSenseError(f"colour stream is {self._color_format}: rgb8, bgr8, rgba8 or bgra8 is needed")
        dk, ck = depth_profile.get_intrinsics(), color_profile.get_intrinsics()
        self.intrinsics = intrinsics_from_rs(dk)  # the frames' lens, whichever registration
        use = self.registration
        if use == "auto":
            use = "extrinsics" if lens_is_supported(ck) else "align"
        self.color_intrinsics = intrinsics_from_rs(ck) if use == "extrinsics" else None
        self._align = rs.align(rs.stream.depth) if use == "align" else None
        self.registration_used = use
        self.depth_to_color = extrinsics_matrix(depth_profile.get_extrinsics_to(color_profile))
        # the depth sensor's depth units (first_depth_sensor() fails on a recorder's device)
        units = [s.get_option(rs.option.depth_units) for s in dev.query_sensors() if s.supports(rs.option.depth_units)]
        if not units or units[0] <= 0:
            raise RealSenseError("the device has no depth sensor with depth units")
        self.depth_scale = _f32(units[0])
        self.fps = float(min(depth_profile.fps(), color_profile.fps()))
        self.serial = dev.get_info(rs.camera_info.serial_number) if dev.supports(rs.camera_info.serial_number) else ""
        self.device_name = dev.get_info(rs.camera_info.name) if dev.supports(rs.camera_info.name) else ""
        self._lens = {"distortion_model": _model_name(dk.model), "distortion_coeffs": [_f32(c) for c in dk.coeffs],
                      "color_distortion_model": _model_name(ck.model),
                      "color_distortion_coeffs": [_f32(c) for c in ck.coeffs]}
        self._last_depth_ms = None

    def _wait(self) -> Any | None:
        """The next frameset; None at the end of a recording; RealSenseError past ``timeout``."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self._pipe is not None:
                ok, frames = self._pipe.try_wait_for_frames(max(1, int((deadline - time.monotonic()) * 1000)))
            else:  # a recording: short steps, to notice its end
                ok, frames = self._syncer.try_wait_for_frames(100)
                if not ok and self._playback.current_status() == self._rs.playback_status.stopped:
                    ok, frames = self._syncer.try_wait_for_frames(50)  # one may have come as it stopped
                    return frames if ok else None
            if ok:
                return frames
            if time.monotonic() >= deadline:
                what = f"the recording {self.file}" if self.file is not None else f"RealSense {self.serial}"
                raise RealSenseError(f"no frames from {what} in {self.timeout:g} s")

    def _next_frame(self) -> RGBDFrame | None:
        deadline = time.monotonic() + self.timeout
        while (frames := self._wait()) is not None:
            pair = self._pair(frames)
            if pair is not None:
                return self._frame(*pair)
            if time.monotonic() >= deadline:
                raise RealSenseError(f"no matching depth and colour frames from RealSense {self.serial} "
                                     f"in {self.timeout:g} s")
        return None

    def _pair(self, frames: Any) -> tuple[Any, Any, Any] | None:
        """(depth frame, colour frame, frameset) of one moment, or None for a frameset to skip.

        A pipeline hands out a frameset whenever any stream has a new frame, pairing it with
        the other stream's latest: one whose colour is half a frame period or more from its
        depth, or whose depth was already delivered, is skipped. A syncer that has not yet
        seen both streams delivers each alone (a recording's first frames): the two are
        paired here when their timestamps match.
        """
        fs = frames.as_frameset()
        depth_f, color_f = fs.get_depth_frame(), fs.get_color_frame()
        if not depth_f or not color_f:
            if not depth_f and not color_f:
                return None
            alone = depth_f or color_f
            alone.keep()
            self._lone["depth" if depth_f else "color"] = alone
            if len(self._lone) < 2:
                return None
            depth_f, color_f = self._lone["depth"], self._lone["color"]
            if abs(depth_f.get_timestamp() - color_f.get_timestamp()) >= 500.0 / self.fps:
                older = "depth" if depth_f.get_timestamp() < color_f.get_timestamp() else "color"
                del self._lone[older]  # the newer may yet meet its partner
                return None
            self._lone.clear()
            fs = None
        t_depth, t_color = depth_f.get_timestamp(), color_f.get_timestamp()
        if abs(t_depth - t_color) >= 500.0 / self.fps:
            return None
        if self._last_depth_ms is not None and t_depth <= self._last_depth_ms:
            return None
        return depth_f, color_f, fs

    def _frame(self, depth_f: Any, color_f: Any, frameset: Any) -> RGBDFrame:
        t_depth, t_color = depth_f.get_timestamp(), color_f.get_timestamp()
        meta = {"source": "realsense", "serial": self.serial, "device": self.device_name,
                "timestamp_domain": _model_name(depth_f.get_frame_timestamp_domain()),
                "depth_frame_number": int(depth_f.get_frame_number()),
                "color_frame_number": int(color_f.get_frame_number()),
                "color_timestamp": t_color / 1000.0, "registration": self.registration_used, **self._lens}
        if self.file is not None:
            meta["file"] = self.name
        scale = _f32(depth_f.get_units()) or self.depth_scale  # a frame knows its units; 0 if it was not told
        if self._align is not None:
            aligned = self._align.process(frameset if frameset is not None else self._composite(depth_f, color_f))
            depth_f, color_f = aligned.get_depth_frame(), aligned.get_color_frame()
        # copies: the frames' memory goes back to librealsense's pool
        depth = np.array(np.asanyarray(depth_f.get_data()), np.uint16)
        image = _to_rgb(np.asanyarray(color_f.get_data()), self._color_format)
        if self._align is None:
            from capture.lens import register

            image, depth = register(depth, scale, self.intrinsics, image, self.color_intrinsics, self.depth_to_color)
        self._last_depth_ms = t_depth
        return RGBDFrame(depth, image, self.intrinsics, float(scale), self.pose.copy(), t_depth / 1000.0,
                         self._count, meta)

    def _composite(self, depth_f: Any, color_f: Any) -> Any:
        """A frameset of two frames delivered apart, for rs.align (which takes only framesets):
        librealsense makes composite frames only inside a processing block."""
        rs = self._rs
        if self._composer is None:
            held: dict[str, Any] = {}
            block = rs.processing_block(
                lambda _f, source: source.frame_ready(source.allocate_composite_frame([held["d"], held["c"]])))
            out = rs.frame_queue(1, True)
            block.start(out)
            self._composer = (block, out, held)
        block, out, held = self._composer
        held.update(d=depth_f, c=color_f)
        block.invoke(depth_f)
        composite = out.wait_for_frame(int(self.timeout * 1000)).as_frameset()
        held.clear()
        return composite

    def _rewind(self) -> None:
        self._stop_file()
        self._open_file()

    def _stop_file(self) -> None:
        """Stop the playback's sensors. A non-real-time playback hands each frame over
        waiting for room in the syncer, and neither a sensor's stop() nor the playback's
        pause() returns while a handover waits: the syncer is drained, on this thread, while
        another thread stops the sensors."""
        sensors, syncer, playback = self._sensors, self._syncer, self._playback
        stopped = threading.Event()

        def stop() -> None:
            for sensor in sensors:
                with contextlib.suppress(RuntimeError):
                    sensor.stop()
            stopped.set()

        if sensors and sys.is_finalizing():  # no new threads now: hand over without waiting, drain, stop
            with contextlib.suppress(RuntimeError):
                playback.set_real_time(True)
            while syncer.poll_for_frames():
                pass
            stop()
        elif sensors:
            threading.Thread(target=stop, name="realsense-stop", daemon=True).start()
            while not stopped.wait(0.005):
                syncer.poll_for_frames()
        for sensor in sensors:
            with contextlib.suppress(RuntimeError):
                sensor.close()
        self._sensors, self._syncer, self._playback = [], None, None
        self._lone.clear()

    def close(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(RuntimeError):  # never started, or already stopped
                self._pipe.stop()
            self._pipe = None
        self._stop_file()
        self._composer = None
        self._device_keepalive = []

    def __del__(self) -> None:
        # a recording left open would keep its playback waiting for a reader, and the
        # process from exiting
        with contextlib.suppress(Exception):
            self.close()


def _to_rgb(image: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "rgb8":
        return np.array(image, np.uint8)
    if fmt == "rgba8":
        return np.ascontiguousarray(image[..., :3])
    return np.ascontiguousarray(image[..., 2::-1])  # bgr8 / bgra8
