"""Rendered views -> numbered PNGs and an H.264 MP4, and the camera paths a video follows.

``VideoOutput`` encodes on threads of its own: PNG compression (zlib, which releases the
GIL; two frames at a time) and the pipe into ffmpeg (which encodes in its own process)
overlap with the next frame's rendering, so a render loop runs close to the speed of its
slowest stage rather than the sum of all of them.
The MP4 is H.264 in yuv420p with the index at the front (``+faststart``): the one format
every ordinary player, browser and phone opens. yuv420p needs even sides, so odd-sized
frames are padded by one row or column (edge pixels repeated) in the video only.

With ``audio_rate``, the MP4 also carries sound: stereo AAC (FFmpeg's own encoder, through
PyAV), its first sample at the video's t=0 and its length the video's. Sound handed to
``write_audio`` waits in an anonymous temporary file (float32 stereo, never all in memory)
until ``close``, which muxes it beside the finished video stream (copied, not re-encoded):
ffmpeg's pipe carries pictures only, and the sound's length is only known to match the
video once the last frame is in.
"""

from __future__ import annotations

import math
import os
import queue
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from render.camera import Camera
from render.room import Room

PNG_PATTERN = "frame_{:06d}.png"


class VideoOutput:
    """``write(image)`` per frame, then ``close()`` (or use ``with``). Writes
    ``folder/frame_000000.png ...`` (``png``) and ``folder/NAME.mp4`` (``mp4``). With
    ``audio_rate`` (Hz), ``write_audio(stereo)`` as often as wanted before ``close``: the
    MP4 gets that sound, cut or padded with silence to the video's length."""

    AUDIO_BIT_RATE = 128_000  # AAC stereo: transparent for speech
    PNG_THREADS = 2  # a 1280x720 PNG takes ~35 ms to compress; two in parallel nearly halve that

    def __init__(self, folder: str | Path, fps: float, png: bool = True, mp4: bool = True, name: str = "video",
                 crf: int = 18, png_level: int = 3, preset: str = "veryfast", backlog: int = 8,
                 audio_rate: int | None = None) -> None:
        if not png and not mp4:
            raise ValueError("nothing to write: ask for PNG frames, an MP4, or both")
        if not 0 < fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {fps}")
        if audio_rate is not None and not 8000 <= audio_rate <= 96000:
            raise ValueError(f"audio_rate must be in 8000..96000 Hz, got {audio_rate}")
        self.audio_rate = audio_rate
        self.audio_samples = 0  # stereo samples handed to write_audio
        self._audio = None  # the temporary file they wait in
        self.folder = Path(folder)
        self.fps = float(fps)
        self.png, self.mp4 = png, mp4
        self.mp4_path = self.folder / f"{name}.mp4"
        self.crf, self.png_level, self.preset = crf, png_level, preset
        self.frames = 0  # frames handed to write()
        self.size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=backlog)
        self._error: BaseException | None = None
        self._writer = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def png_paths(self) -> list[Path]:
        return [self.folder / PNG_PATTERN.format(i) for i in range(self.frames)] if self.png else []

    def write(self, image: np.ndarray) -> None:
        """Queue one RGB frame (H, W, 3) uint8; blocks only while the writer is ``backlog`` behind."""
        if self._closed:
            raise ValueError("this VideoOutput is closed")
        self._raise_pending()
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frames are (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        size = (image.shape[1], image.shape[0])
        if self.size is None:
            self.size = size
            self.folder.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, name="video-output", daemon=True)
            self._thread.start()
        elif size != self.size:
            raise ValueError(f"every frame of a video has one size: {self.size[0]}x{self.size[1]}, "
                             f"then {size[0]}x{size[1]}")
        self._queue.put(image.copy())  # the caller may reuse its buffer
        self.frames += 1

    def write_audio(self, stereo: np.ndarray) -> None:
        """Append sound, float32 (n, 2) in [-1, 1] at ``audio_rate``, following what came
        before; the first sample plays with the first frame. Needs ``audio_rate``; without
        ``mp4`` it goes nowhere (write a WAV for it)."""
        if self._closed:
            raise ValueError("this VideoOutput is closed")
        if self.audio_rate is None:
            raise ValueError("this VideoOutput has no audio track: give audio_rate")
        stereo = np.asarray(stereo, np.float32)
        if stereo.ndim != 2 or stereo.shape[1] != 2:
            raise ValueError(f"audio is stereo, shape (n, 2), not {stereo.shape}")
        if not self.mp4:
            return
        if self._audio is None:
            self._audio = tempfile.TemporaryFile(prefix="holoport-audio-")  # noqa: SIM115 - closed by close()
        self._audio.write(np.ascontiguousarray(np.nan_to_num(stereo)).tobytes())
        self.audio_samples += len(stereo)

    def close(self) -> None:
        """Finish every queued frame and the MP4's index, then mux in the sound; raises what
        the writer ran into."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        try:
            self._raise_pending()
            if self.audio_rate is not None and self.mp4 and self.frames:
                try:
                    self._mux_audio()
                except Exception as exc:  # PyAV's errors, a full disk: the silent video stays
                    raise RuntimeError(f"adding the sound to {self.mp4_path} failed: {exc}") from exc
        finally:
            if self._audio is not None:
                self._audio.close()

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing the video to {self.folder} failed: {error}") from error

    def _run(self) -> None:
        index = 0
        pngs: deque[Future] = deque()  # PNGs being compressed, oldest first
        try:
            with ThreadPoolExecutor(self.PNG_THREADS, thread_name_prefix="png") as pool:
                while (image := self._queue.get()) is not None:
                    if self.png:
                        pngs.append(pool.submit(_write_png, self.folder / PNG_PATTERN.format(index), image,
                                                self.png_level))
                        while len(pngs) > 2 * self.PNG_THREADS or (pngs and pngs[0].done()):
                            pngs.popleft().result()
                    if self.mp4:
                        self._mp4_writer().append_data(_even(image))
                    index += 1
                while pngs:
                    pngs.popleft().result()
        except BaseException as exc:  # handed to the caller on its next write() or close()
            self._error = exc
            while self._queue.get() is not None:  # let write() and close() go on
                pass
        finally:
            if self._writer is not None:
                try:
                    self._writer.close()
                except Exception as exc:
                    self._error = self._error or exc

    def _mp4_writer(self):
        if self._writer is None:
            import imageio.v2 as iio2

            try:
                import imageio_ffmpeg  # noqa: F401 - imageio's FFMPEG plugin runs its ffmpeg
            except ImportError:
                raise RuntimeError("MP4 output needs imageio-ffmpeg (pip install imageio-ffmpeg), "
                                   "or write PNG frames only") from None
            self._writer = iio2.get_writer(
                self.mp4_path, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                pixelformat="yuv420p", macro_block_size=1, quality=None, ffmpeg_log_level="error",
                output_params=["-crf", str(self.crf), "-preset", self.preset, "-movflags", "+faststart"])
        return self._writer


    def _mux_audio(self) -> None:
        """The finished video stream copied into a new MP4 beside stereo AAC of exactly the
        video's length (frames / fps), interleaved by time; it then replaces the silent one."""
        import av

        total = round(self.frames / self.fps * self.audio_rate)
        muxed = self.mp4_path.with_name(f".{self.mp4_path.stem}.muxing.mp4")
        try:
            with av.open(str(self.mp4_path)) as src, \
                    av.open(str(muxed), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
                video = src.streams.video[0]
                vout = dst.add_stream_from_template(video)
                aout = dst.add_stream("aac", rate=self.audio_rate, layout="stereo")
                aout.codec_context.bit_rate = self.AUDIO_BIT_RATE
                done = 0
                for packet in src.demux(video):
                    if packet.dts is None:  # the demuxer's empty flush packet
                        continue
                    # sound a little ahead of each picture: the muxer interleaves the two by time
                    ahead = float(packet.dts * packet.time_base) + 0.25
                    done = self._encode_audio(dst, aout, done, min(total, max(0, round(ahead * self.audio_rate))))
                    packet.stream = vout
                    dst.mux(packet)
                self._encode_audio(dst, aout, done, total)
                dst.mux(aout.encode(None))
            os.replace(muxed, self.mp4_path)
        finally:
            muxed.unlink(missing_ok=True)

    def _encode_audio(self, dst, stream, start: int, stop: int, chunk: int = 4800) -> int:
        """Samples ``start``..``stop`` of the sound (silence past what was written) into the
        AAC stream; returns ``stop``."""
        import av

        for at in range(start, stop, chunk):
            n = min(chunk, stop - at)
            planar = np.zeros((2, n), np.float32)
            have = max(0, min(n, self.audio_samples - at))
            if have:
                self._audio.seek(at * 8)
                planar[:, :have] = np.frombuffer(self._audio.read(have * 8), np.float32).reshape(have, 2).T
            frame = av.AudioFrame.from_ndarray(np.clip(planar, -1.0, 1.0), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = self.audio_rate, at
            dst.mux(stream.encode(frame))
        return max(start, stop)


def _write_png(path: Path, image: np.ndarray, level: int) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG", compress_level=level)


def _even(image: np.ndarray) -> np.ndarray:
    """Pad to even sides (yuv420p subsamples colour 2x2), repeating the last row/column."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def orbit_path(room: Room, frames: int, width: int, height: int, turns: float = 1.0,
               start: float = 0.0) -> list[Camera]:
    """``frames`` cameras circling the table ``turns`` times (``Room.orbit_camera``), starting
    behind seat 0 (angle ``start``, radians); the last frame stops one step short of the first
    so that a whole turn loops seamlessly."""
    if frames < 1:
        raise ValueError(f"a camera path needs at least one frame, got {frames}")
    step = 2 * math.pi * turns / frames
    return [room.orbit_camera(start + i * step, width, height) for i in range(frames)]


def seat_path(room: Room, seat: int, frames: int, width: int, height: int) -> list[Camera]:
    """The first-person view from ``seat`` (``Room.seat_camera``) for every frame: one camera
    object, so the renderer draws the room once and reuses it."""
    if frames < 1:
        raise ValueError(f"a camera path needs at least one frame, got {frames}")
    camera = room.seat_camera(seat, width, height)
    return [camera] * frames

