"""Rendered views -> numbered PNGs and an H.264 MP4, and the camera paths a video follows.

``VideoOutput`` encodes on threads of its own: PNG compression (zlib, which releases the
GIL; two frames at a time) and the pipe into ffmpeg (which encodes in its own process)
overlap with the next frame's rendering, so a render loop runs close to the speed of its
slowest stage rather than the sum of all of them.
The MP4 is H.264 in yuv420p with the index at the front (``+faststart``): the one format
every ordinary player, browser and phone opens. yuv420p needs even sides, so odd-sized
frames are padded by one row or column (edge pixels repeated) in the video only.
"""

from __future__ import annotations

import math
import queue
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
    ``folder/frame_000000.png ...`` (``png``) and ``folder/NAME.mp4`` (``mp4``)."""

    PNG_THREADS = 2  # a 1280x720 PNG takes ~35 ms to compress; two in parallel nearly halve that

    def __init__(self, folder: str | Path, fps: float, png: bool = True, mp4: bool = True, name: str = "video",
                 crf: int = 18, png_level: int = 3, preset: str = "veryfast", backlog: int = 8) -> None:
        if not png and not mp4:
            raise ValueError("nothing to write: ask for PNG frames, an MP4, or both")
        if not 0 < fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {fps}")
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

    def close(self) -> None:
        """Finish every queued frame and the MP4's index; raises what the writer ran into."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._raise_pending()

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

