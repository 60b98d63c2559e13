"""Spatial voice: the direction of a seat from the listener's head (agreeing with where the
renderer draws that seat), and binaural-lite stereo: the near ear louder and earlier, ahead
balanced, blocks that join seamlessly."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from scipy.signal import correlate, resample_poly

from render.camera import Camera
from render.room import Room
from render.spatial import (
    MOUTH_HEIGHT,
    Spatializer,
    azimuth,
    camera_pose,
    itd,
    mix,
    pan_gains,
    seat_azimuth,
)

RATE = 48_000
BLOCK = 960


def noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(RATE * seconds))).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def lead(stereo: np.ndarray, span: int = 64) -> int:
    """Samples by which the left ear leads the right (negative: the right leads)."""
    left, right = stereo[:, 0].astype(np.float64), stereo[:, 1].astype(np.float64)
    c = correlate(right, left, mode="full")
    mid = len(left) - 1
    window = c[mid - span:mid + span + 1]
    return int(np.argmax(window)) - span


def render(x: np.ndarray, az: float, dist: float = 1.5) -> np.ndarray:
    sp = Spatializer(RATE)
    return np.concatenate([sp.process(x[i:i + BLOCK], az, dist) for i in range(0, len(x), BLOCK)])


@pytest.fixture(scope="module")
def speech(data_dir) -> np.ndarray:
    from render.audio_out import read_wav

    clip = data_dir / "audio" / "cmu_arctic_us_axb_a0004.wav"
    if not clip.is_file():
        pytest.skip(f"no speech clip {clip}")
    pcm, rate = read_wav(clip)
    return resample_poly(pcm, RATE // rate, 1).astype(np.float32)


# --- geometry -------------------------------------------------------------------------------

def test_azimuth_is_positive_to_the_right_and_levels_the_gaze():
    head, fwd, up = (0, 1.5, 0), (0, 0, -1), (0, 1, 0)  # looking down -z: right is +x
    assert azimuth(head, fwd, up, (0, 1.5, -2)) == pytest.approx((0.0, 2.0))
    az, d = azimuth(head, fwd, up, (3, 1.5, 0))
    assert az == pytest.approx(math.pi / 2) and d == pytest.approx(3)
    assert azimuth(head, fwd, up, (-1, 1.5, -1))[0] == pytest.approx(-math.pi / 4)
    assert abs(azimuth(head, fwd, up, (0, 1.5, 2))[0]) == pytest.approx(math.pi)  # behind
    # a gaze tilted down does not move a source at ear level off centre
    assert azimuth(head, (0, -0.5, -1), up, (0, 1.5, -2))[0] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        azimuth(head, (0, 1, 0), up, (1, 0, 0))


def test_camera_pose_is_the_camera_it_came_from():
    cam = Camera.look_at((1.0, 1.4, 2.0), (0.0, 0.9, 0.0))
    pos, fwd, up = camera_pose(cam)
    assert pos == pytest.approx([1.0, 1.4, 2.0])
    direction = -np.array([1.0, 0.5, 2.0])
    assert fwd == pytest.approx(direction / np.linalg.norm(direction))
    assert up[1] > 0.8 and abs(fwd @ up) < 1e-12


@pytest.mark.parametrize("seats", [3, 6])
def test_neighbouring_seats_sound_from_opposite_sides_where_they_are_drawn(seats):
    room = Room(seats=seats)
    for me in range(seats):
        cam = room.seat_camera(me)
        right_of, left_of = (me + 1) % seats, (me - 1) % seats
        az_r, d_r = seat_azimuth(room, me, right_of)
        az_l, d_l = seat_azimuth(room, me, left_of)
        assert az_r * az_l < 0 and az_r == pytest.approx(-az_l) and d_r == pytest.approx(d_l)
        for other in range(seats):
            if other == me:
                continue
            az, _ = seat_azimuth(room, me, other)
            if abs(az) < 1e-9:
                continue  # straight across: drawn at the centre
            mouth = room.seat_position(other).copy()
            mouth[1] = MOUTH_HEIGHT
            u = cam.project(mouth[None])[0, 0]
            assert (az > 0) == (u > cam.cx)  # the voice comes from the side the hologram is drawn on
        if seats == 6:
            assert abs(seat_azimuth(room, me, (me + 3) % seats)[0]) < 1e-9  # across the table: ahead


# --- rendering ------------------------------------------------------------------------------

def test_itd_is_woodworths_and_about_0_66_ms_at_the_side():
    assert itd(math.pi / 2) == pytest.approx(0.0875 / 343 * (math.pi / 2 + 1))
    assert 0.00064 < itd(math.pi / 2) < 0.00068 and itd(-math.pi / 2) == -itd(math.pi / 2)
    assert itd(0.0) == 0.0 and itd(math.radians(150)) == pytest.approx(itd(math.radians(30)))


@pytest.mark.parametrize("side", [-1, 1])
def test_a_voice_to_one_side_is_louder_and_earlier_in_that_ear(side):
    out = render(noise(), side * math.pi / 2)
    near, far = (0, 1) if side < 0 else (1, 0)
    assert rms(out[:, near]) > 1.5 * rms(out[:, far])  # head shadow: > 3.5 dB
    expected = round(itd(math.pi / 2) * RATE)
    assert lead(out) == -side * expected or lead(out) == -side * (expected + 1)  # ~31.5 samples


def test_a_seat_to_the_listeners_left_is_heard_on_the_left(speech):
    room = Room(seats=3)
    az_left, dist = seat_azimuth(room, 0, 2)
    assert math.degrees(az_left) == pytest.approx(-26.1, abs=0.1)
    out = render(speech, az_left, dist)
    samples = round(-itd(az_left) * RATE)  # 11: 0.23 ms
    # speech is mostly below the head shadow's corner (~1 kHz): the level cue is ~1 dB at 26
    # degrees, as with a real head, and the shadow filters' phase adds to the time cue at
    # speech's low frequencies (real heads' low-frequency ITD is larger too)
    assert rms(out[:, 0]) > 1.1 * rms(out[:, 1]) and samples <= lead(out) <= 1.5 * samples
    mirror = render(speech, *seat_azimuth(room, 0, 1))
    assert rms(mirror[:, 1]) > 1.1 * rms(mirror[:, 0]) and lead(mirror) == -lead(out)
    assert rms(out) == pytest.approx(rms(mirror), rel=1e-6)


def test_ahead_is_balanced_and_distance_attenuates():
    x = noise()
    out = render(x, 0.0, 1.0)
    assert np.array_equal(out[:, 0], out[:, 1]) and lead(out) == 0
    far = render(x, 0.0, 4.0)
    assert rms(far) == pytest.approx(rms(out) / 4, rel=1e-6)
    assert rms(render(x, 0.0, 0.2)) == pytest.approx(rms(out), rel=1e-6)  # clamped inside a metre


def test_blocks_join_exactly_as_one_long_block():
    x = noise(0.5, seed=3)
    for az in (-1.1, 0.3, 2.5):
        whole = Spatializer(RATE).process(x, az, 2.0)
        assert np.allclose(render(x, az, 2.0), whole, atol=1e-6)
        odd = Spatializer(RATE)  # any block sizes, down to single samples
        cuts = [0, 1, 2, 7, 500, 960, 3000, len(x)]
        parts = np.concatenate([odd.process(x[a:b], az, 2.0) for a, b in pairwise(cuts)])
        assert np.allclose(parts, whole, atol=1e-6)


def test_a_moving_voice_does_not_click():
    t = np.arange(RATE) / RATE
    x = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    sp = Spatializer(RATE)
    out = np.concatenate([sp.process(x[i:i + BLOCK], (-1) ** (i // BLOCK) * math.pi / 2, 1.0)
                          for i in range(0, len(x), BLOCK)])  # side to side every 20 ms
    steepest = np.max(np.abs(np.diff(x)))
    assert np.max(np.abs(np.diff(out, axis=0))) < 2.5 * steepest
    jumpy, sp = [], Spatializer(RATE)
    for i in range(0, len(x), BLOCK):
        sp._prev = None  # the same state, but the new direction at once: what a click is
        jumpy.append(sp.process(x[i:i + BLOCK], (-1) ** (i // BLOCK) * math.pi / 2, 1.0))
    assert np.max(np.abs(np.diff(np.concatenate(jumpy), axis=0))) > 5 * steepest


def test_bad_input_is_refused():
    sp = Spatializer(RATE)
    with pytest.raises(ValueError):
        sp.process(np.zeros((10, 2)), 0.0, 1.0)
    with pytest.raises(ValueError):
        sp.process(np.zeros(10), float("nan"), 1.0)
    with pytest.raises(ValueError):
        sp.process(np.zeros(10), 0.0, -1.0)
    assert sp.process(np.zeros(0), 0.0, 1.0).shape == (0, 2)


def test_pan_gains_keep_power_constant():
    for az in np.linspace(-math.pi, math.pi, 37):
        left, right = pan_gains(az)
        assert left**2 + right**2 == pytest.approx(1.0)
    assert pan_gains(0.0) == pytest.approx((math.sqrt(0.5), math.sqrt(0.5)))
    assert pan_gains(-math.pi / 2) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_mix_sums_and_soft_clips():
    a = np.full((BLOCK, 2), 0.3, np.float32)
    assert np.allclose(mix([a, a]), 0.6)  # below the knee: a plain sum
    loud = mix([a] * 8)  # 2.4: would clip
    assert np.all(loud <= 1.0) and np.all(loud > 0.9)
    ramp = np.linspace(-1.2, 1.2, BLOCK)[:, None].repeat(2, 1)
    soft = mix([ramp])
    assert np.all(np.diff(soft[:, 0]) > 0) and np.all(np.abs(soft) < 1)  # monotonic: no folding back
    assert mix([], samples=BLOCK).shape == (BLOCK, 2)
    with pytest.raises(ValueError):
        mix([a, a[:10]])
