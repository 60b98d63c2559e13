"""Voices from the speaker's seat: direction from the listener's head, and binaural-lite
rendering to stereo.

Where a voice comes from is what lets a room of people tell who is talking, so each voice is
rendered from its speaker's seat relative to the listener's head (the seat camera the
listener sees the room through). Rendering is "binaural-lite", the two cues that carry
left/right on headphones, cheap enough for every voice of a room on a CPU:

- interaural time difference: Woodworth's spherical head (``a/c * (theta + sin theta)``,
  about 0.66 ms at the side), a fractional delay on the far ear;
- interaural level difference: Brown & Duda's (1998) one-pole/one-zero head-shadow filter,
  which boosts the highs at the near ear and cuts them at the far one (no level change at
  low frequencies, as with a real head);

plus 1/r distance attenuation (clamped inside a metre). There is no elevation and no
front/back cue (no pinnae): for people seated round one table, azimuth is what matters.
A ``Spatializer`` keeps each source's delay line and filter state across blocks, and ramps
its delay, filter and gain over a block when the direction changes, so blocks join without
clicks and 20 ms blocks give the same samples as one long block.

Angles: azimuth 0 is straight ahead, positive to the listener's right (radians). Room
coordinates are render's: metres, y up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from render.camera import Camera
from render.room import Room

HEAD_RADIUS = 0.0875  # m: the average adult head of Woodworth's and Brown-Duda's models
SPEED_OF_SOUND = 343.0  # m/s
MOUTH_HEIGHT = 1.55  # m above the floor: a standing speaker's mouth
REF_DISTANCE = 1.0  # m: closer than this is no louder
ALPHA_MIN = 0.1  # Brown-Duda: high-frequency gain in the deepest shadow ...
THETA_MIN = math.radians(150)  # ... reached this far round from the ear
PAD = 2  # samples of fixed delay both ears share, so cubic interpolation never needs the future


def azimuth(listener_pos, listener_forward, listener_up, source_pos) -> tuple[float, float]:
    """(azimuth, distance) of a source from a listener's head: azimuth in radians in the
    head's horizontal plane (0 ahead, positive to the right), distance in metres."""
    pos, fwd, up, src = (np.asarray(v, dtype=np.float64).reshape(3) for v in
                         (listener_pos, listener_forward, listener_up, source_pos))
    up_n = float(np.linalg.norm(up))
    if not up_n > 0:
        raise ValueError("listener_up must be a non-zero vector")
    up = up / up_n
    fwd = fwd - (fwd @ up) * up  # level the gaze: azimuth is in the head's own plane
    fwd_n = float(np.linalg.norm(fwd))
    if not fwd_n > 1e-9:
        raise ValueError("listener_forward must not be parallel to listener_up")
    fwd /= fwd_n
    right = np.cross(fwd, up)  # as render.camera builds a camera's x axis
    d = src - pos
    dist = float(np.linalg.norm(d))
    x, z = float(d @ right), float(d @ fwd)
    if not all(map(math.isfinite, (dist, x, z))):
        raise ValueError("positions must be finite")
    return (math.atan2(x, z) if x or z else 0.0), dist


def camera_pose(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A camera as a head: (position, forward, up) in the room. OpenCV axes: rows of the
    rotation are the camera's right, down and forward."""
    rot = camera.world_to_camera[:3, :3]
    return camera.position.copy(), rot[2].copy(), -rot[1].copy()


def seat_azimuth(room: Room, listener_seat: int, speaker_seat: int,
                 mouth_height: float = MOUTH_HEIGHT) -> tuple[float, float]:
    """(azimuth, distance) of the speaker at ``speaker_seat``'s mouth from the head of the
    listener at ``listener_seat``, whose eyes are that seat's first-person camera: the voice
    comes from where the listener sees the speaker's hologram."""
    source = room.seat_position(speaker_seat).copy()
    source[1] = mouth_height
    return azimuth(*camera_pose(room.seat_camera(listener_seat)), source)


def itd(az: float, head_radius: float = HEAD_RADIUS) -> float:
    """Woodworth's interaural time difference (s): positive when the source is to the right
    (the right ear hears it first). Front and back mirror (the lateral angle)."""
    lateral = math.asin(max(-1.0, min(1.0, math.sin(az))))
    return head_radius / SPEED_OF_SOUND * (lateral + math.sin(lateral))


def shadow_alpha(angle_from_ear: float) -> float:
    """Brown-Duda's high-frequency gain at an ear, the source ``angle_from_ear`` radians
    (0..pi) round from it: 2 (+6 dB) facing the ear, 0.1 (-20 dB) at 150 degrees."""
    return (1 + ALPHA_MIN / 2) + (1 - ALPHA_MIN / 2) * math.cos(angle_from_ear / THETA_MIN * math.pi)


def pan_gains(az: float) -> tuple[float, float]:
    """Constant-power (left, right) gains for plain stereo panning: equal ahead, one ear only
    at the side; behind mirrors the front."""
    phi = (math.sin(az) + 1) * math.pi / 4
    return math.cos(phi), math.sin(phi)


def _ear_angles(az: float) -> tuple[float, float]:
    """Angles from the left (-90 degrees) and right (+90 degrees) ears, in 0..pi."""
    def gap(a: float) -> float:
        return abs(math.remainder(a, 2 * math.pi))
    return gap(az + math.pi / 2), gap(az - math.pi / 2)


class Spatializer:
    """One voice's binaural-lite renderer: mono blocks in, stereo (n, 2) float32 out, its
    delay line and filter state carried from block to block."""

    def __init__(self, sample_rate: int = 48_000, head_radius: float = HEAD_RADIUS,
                 ref_distance: float = REF_DISTANCE) -> None:
        if sample_rate <= 0 or not head_radius > 0 or not ref_distance > 0:
            raise ValueError("sample_rate, head_radius and ref_distance must be positive")
        self.sample_rate = sample_rate
        self.head_radius = head_radius
        self.ref_distance = ref_distance
        # Brown-Duda H(s) = (1 + alpha s / 2w0) / (1 + s / 2w0), w0 = c/a, by the bilinear
        # transform: its pole does not depend on alpha, so one all-pole state per ear serves
        # every direction and alpha can change per sample without a click.
        w2, k = 2 * SPEED_OF_SOUND / head_radius, 2.0 * sample_rate
        self._a = np.array([1.0, (w2 - k) / (w2 + k)])
        self._b_sum, self._b_diff = w2 / (w2 + k), k / (w2 + k)
        max_delay = itd(math.pi / 2, head_radius) * sample_rate
        self._hist = np.zeros(PAD + math.ceil(max_delay) + 3)  # the input's recent past
        self._zi = np.zeros((2, 1))  # all-pole state per ear
        self._u_last = np.zeros(2)  # last all-pole output per ear
        self._prev: np.ndarray | None = None  # (delay L, delay R, alpha L, alpha R, gain)

    def reset(self) -> None:
        """Silence the past (a new talker in this slot)."""
        self._hist[:] = 0
        self._zi[:] = 0
        self._u_last[:] = 0
        self._prev = None

    def _params(self, az: float, distance: float) -> np.ndarray:
        tau = itd(az, self.head_radius) * self.sample_rate
        left, right = _ear_angles(az)
        gain = min(1.0, self.ref_distance / distance) if distance > 0 else 1.0
        return np.array([PAD + max(tau, 0.0), PAD + max(-tau, 0.0), shadow_alpha(left), shadow_alpha(right), gain])

    def process(self, mono: np.ndarray, azimuth: float, distance: float) -> np.ndarray:
        """The next block of this voice, heard from ``azimuth`` (radians, positive right) at
        ``distance`` (m): stereo float32 (n, 2), left then right. A change of direction
        since the last block is ramped across this one."""
        x = np.asarray(mono, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"process takes mono samples (n,), got shape {x.shape}")
        if not (math.isfinite(azimuth) and math.isfinite(distance) and distance >= 0):
            raise ValueError(f"azimuth must be finite and distance finite and >= 0, got {azimuth}, {distance}")
        n = len(x)
        if n == 0:
            return np.zeros((0, 2), np.float32)
        x = np.nan_to_num(x)
        new = self._params(azimuth, distance)
        prev = new if self._prev is None else self._prev
        self._prev = new
        ramp = np.arange(1, n + 1) / n
        p = prev[:, None] + (new - prev)[:, None] * ramp  # (5, n): every parameter per sample
        h = len(self._hist)
        ext = np.concatenate([self._hist, x])
        self._hist = ext[-h:].copy()
        out = np.empty((n, 2), np.float32)
        for ear in (0, 1):
            delayed = _fractional_read(ext, h + np.arange(n) - p[ear])
            u, self._zi[ear] = lfilter([1.0], self._a, delayed, zi=self._zi[ear])
            u_prev = np.concatenate([[self._u_last[ear]], u[:-1]])
            self._u_last[ear] = u[-1]
            y = self._b_sum * (u + u_prev) + p[2 + ear] * self._b_diff * (u - u_prev)
            out[:, ear] = y * p[4]
        return out


def _fractional_read(signal: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``signal`` at fractional ``positions`` by 4-point (cubic) Lagrange interpolation:
    flat to well above speech's band, unlike linear interpolation's dull highs."""
    i = np.floor(positions).astype(np.int64)
    f = positions - i
    fm1, fp1, fm2 = f - 1, f + 1, f - 2
    return (signal[i - 1] * (-f * fm1 * fm2 / 6) + signal[i] * (fp1 * fm1 * fm2 / 2)
            + signal[i + 1] * (-fp1 * f * fm2 / 2) + signal[i + 2] * (fp1 * f * fm1 / 6))


def mix(stereo_blocks: Sequence[np.ndarray], samples: int | None = None, knee: float = 0.9) -> np.ndarray:
    """The room's voices summed to one stereo block, soft-clipped: linear up to ``knee``,
    then a tanh curve that approaches full scale without passing it, so several people
    talking at once saturate gently instead of wrapping or hard-clipping. ``samples``: the
    length when there may be no blocks."""
    if not 0 < knee < 1:
        raise ValueError(f"knee must be in (0, 1), got {knee}")
    blocks = [np.asarray(b, dtype=np.float64) for b in stereo_blocks]
    n = samples if samples is not None else (len(blocks[0]) if blocks else 0)
    total = np.zeros((n, 2))
    for b in blocks:
        if b.shape != (n, 2):
            raise ValueError(f"mix takes stereo blocks of shape ({n}, 2), got {b.shape}")
        total += b
    mag = np.abs(total)
    over = mag > knee
    mag[over] = knee + (1 - knee) * np.tanh((mag[over] - knee) / (1 - knee))
    return (np.sign(total) * mag).astype(np.float32)
