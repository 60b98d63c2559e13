"""Azure Kinect recordings through PyAV, checked against facts the reader does not use:
the SDK's published field of view, flat walls, the depth track's own bytes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from capture import rgbd_to_points
from capture.azure_kinect import AzureKinectRecording, KinectCalibration, KinectFileError
from capture.lens import rays

pytest.importorskip("av", reason="PyAV reads the Matroska recording")


@pytest.fixture(scope="module")
def mkv(data_dir):
    path = data_dir / "rgbd" / "azure-kinect" / "recording.mkv"
    if not path.is_file():
        pytest.skip(f"no Azure Kinect recording at {path}")
    return path


def raw_track(path, title: str) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        stream = next(s for s in c.streams.video if s.metadata.get("title") == title)
        for packet in c.demux(stream):
            if packet.size:
                return np.frombuffer(bytes(packet), ">u2").reshape(576, 640)
    raise AssertionError(f"no {title} frame")


def test_mode_calibration_follows_the_sdk(mkv):
    rec = AzureKinectRecording(mkv)
    raw = json.loads((mkv.parent / "calibration.json").read_text())["CalibrationInformation"]["Cameras"]
    p = raw[0]["Intrinsics"]["ModelParameters"]
    k = rec.calibration.depth
    # NFOV unbinned: the 1024x1024 calibration cropped by (192, 180), pixel centres at 0
    assert (k.width, k.height) == (640, 576)
    assert k.fx == pytest.approx(p[2] * 1024) and k.cx == pytest.approx(p[0] * 1024 - 192 - 0.5)
    assert k.cy == pytest.approx(p[1] * 1024 - 180 - 0.5)
    assert k.distortion[:2] == pytest.approx(p[4:6]) and k.max_radius == pytest.approx(1.74, abs=1e-3)
    c = rec.calibration.color  # 720p from the 4:3 sensor: 1280x960 cropped by 120 rows
    assert (c.width, c.height) == (1280, 720)
    assert c.fx == pytest.approx(c.fy, rel=0.01)  # square pixels once scaled right
    t = rec.calibration.depth_to_color
    assert t[:3, 3] * 1000 == pytest.approx([-32.08, -2.21, 3.88], abs=0.01)
    angle = np.degrees(np.arccos((np.trace(t[:3, :3]) - 1) / 2))
    assert angle == pytest.approx(4.94, abs=0.01)  # data/README.md's figure for this unit
    rec.close()


def test_field_of_view_is_the_sdks(mkv):
    """Microsoft gives NFOV unbinned as 75° x 65°; a pinhole with the same fx, fy, cx, cy
    would see only about 65° x 59°."""
    with AzureKinectRecording(mkv) as rec:
        k = rec.intrinsics

    def fov(table):
        row, col = table[round(k.cy), :, 0], table[:, round(k.cx), 1]
        return (np.degrees(np.arctan(np.nanmax(row)) - np.arctan(np.nanmin(row))),
                np.degrees(np.arctan(np.nanmax(col)) - np.arctan(np.nanmin(col))))

    h, v = fov(rays(k))
    assert h == pytest.approx(75, abs=3) and v == pytest.approx(65, abs=2)
    h_pin, v_pin = fov(rays(dataclasses.replace(k, distortion=(), max_radius=0.0)))
    assert h - h_pin > 6 and v - v_pin > 4


def test_frames_carry_the_recorded_depth_and_a_registered_color(mkv):
    depth_track = raw_track(mkv, "DEPTH")
    with AzureKinectRecording(mkv) as rec:
        frames = list(rec)
    assert len(frames) == 1  # this recording holds one capture
    f = frames[0]
    kept = f.depth > 0
    assert np.array_equal(f.depth[kept], depth_track[kept])  # the millimetres, unchanged
    assert kept.mean() > 0.6 and (depth_track > 0).mean() - kept.mean() < 0.1
    assert f.depth_scale == 1e-3 and f.timestamp == pytest.approx(0.463945 - 0.336277)
    assert f.color[kept].mean() > 60 and (f.color[~kept] == 0).all()
    assert f.meta["serial"] == "001514394512"


def test_walls_come_out_flat(mkv):
    """The wall on the left runs to the image edge, where the lens bends rays most: through
    the ray table it is a plane to 2 mm; through a pinhole it bends."""
    with AzureKinectRecording(mkv) as rec:
        f = rec.read()

    def plane_rms(frame):
        sub = dataclasses.replace(frame, depth=frame.depth.copy())
        mask = np.zeros_like(sub.depth, bool)
        mask[60:300, 40:230] = True
        sub.depth[~mask] = 0
        p, _ = rgbd_to_points(sub, box=None)
        centred = p - p.mean(0)
        normal = np.linalg.svd(centred, full_matrices=False)[2][2]
        return float(np.sqrt(np.mean((centred @ normal) ** 2))), len(p)

    rms, n = plane_rms(f)
    pin_rms, _ = plane_rms(dataclasses.replace(f, intrinsics=dataclasses.replace(f.intrinsics, distortion=())))
    assert n > 30_000
    assert rms < 0.0025 and pin_rms > 1.8 * rms


def test_loop_and_realtime_pacing(mkv):
    import time

    with AzureKinectRecording(mkv, loop=True, realtime=True) as rec:
        t0 = time.monotonic()
        stamps = [rec.read().timestamp for _ in range(4)]
        elapsed = time.monotonic() - t0
    assert np.all(np.diff(stamps) > 0)
    assert elapsed >= 3 / rec.fps * 0.9  # paced at the loop's frame spacing


def test_not_a_kinect_file(tmp_path, mkv):
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40)
    with pytest.raises(KinectFileError):
        AzureKinectRecording(junk)
    with pytest.raises(KinectFileError, match="calibration"):
        KinectCalibration.from_json(b'{"CalibrationInformation": {}}', "NFOV_UNBINNED", None)
    good = (mkv.parent / "calibration.json").read_text()
    with pytest.raises(KinectFileError, match="depth mode"):
        KinectCalibration.from_json(good, "NFOV_3X3", None)


def test_a_cut_recording_plays_what_it_holds(tmp_path, mkv):
    """Cut anywhere: a clear error or the complete frames, never a crash or half a frame."""
    data = mkv.read_bytes()
    rng = np.random.default_rng(5)
    for cut in (100, len(data) // 3, len(data) - 1000, *rng.integers(0, len(data), 6)):
        short = tmp_path / f"cut{cut}.mkv"
        short.write_bytes(data[:cut])
        try:
            rec = AzureKinectRecording(short)
        except KinectFileError:
            continue  # the header itself was cut
        with rec:
            frames = list(rec)
        for f in frames:
            assert f.depth.shape == (576, 640)


def test_open_points_takes_a_kinect_file(mkv):
    from holoport.point_sources import open_points

    source = open_points(str(mkv), realtime=False, loop=True, crop="none")
    try:
        frame = source.read_rgbd()
        positions, colors = source.read()
    finally:
        source.close()
    assert len(positions) == int(((frame.depth > 0) & (frame.depth <= 6000) & (frame.depth >= 200)).sum())
    assert positions[:, 2].min() >= 0.2 and colors.mean() > 60
    # by default a Kinect's points go through the person cut: within 3 m, one cluster
    source = open_points(str(mkv), realtime=False, loop=True)
    try:
        cut, _ = source.read()
    finally:
        source.close()
    assert source.crop == "cut"
    assert 0 < len(cut) < len(positions) and cut[:, 2].max() <= 3.0


def test_cameras_file_places_and_fuses_each_camera(mkv, tmp_path):
    """Two cameras from a cameras file (the one recording standing in for both): each
    camera's points are moved by its own pose, the rig is placed in the participant's
    frame, and the two clouds are fused."""
    from capture.rig import Rig, RigCamera
    from holoport.point_sources import FusedPoints, open_points

    turn = np.eye(4)
    turn[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # 90° about y
    turn[:3, 3] = [2.0, 1.0, 3.0]
    rig_file = tmp_path / "cameras.json"
    Rig([RigCamera("front", np.eye(4)), RigCamera("side", turn)], "front").save(rig_file)
    with pytest.raises(ValueError, match="NAME=SOURCE"):
        open_points(str(mkv), cameras=rig_file)
    source = open_points(f"front={mkv},side={mkv}", realtime=False, cameras=rig_file, crop="none")
    assert isinstance(source, FusedPoints)
    source.voxel = None  # keep every point, to check each camera's placement
    try:
        positions, _ = source.read()
    finally:
        source.close()
    half = len(positions) // 2
    front, side = positions[:half].astype(np.float64), positions[half:].astype(np.float64)
    assert len(front) == len(side) > 100_000
    assert np.allclose(side, front @ turn[:3, :3].T + turn[:3, 3], atol=1e-4)
    # cut to the person (the default), the rig, which is in the front camera's frame, is
    # first placed in the participant's frame by that camera's view (P), every pose after it
    source = open_points(f"front={mkv},side={mkv}", realtime=False, cameras=rig_file)
    try:
        source.read()
        front_only, _ = source.parts[0].read()
    finally:
        source.close()
    placement = source.parts[0].pose
    assert not np.array_equal(placement, np.eye(4)) and np.allclose(source.parts[1].pose, placement @ turn)
    assert front_only[:, 1].min() > -0.05  # on the floor, not upside down
    fused = FusedPoints(source.parts, voxel=0.01)  # and merging does merge
    assert fused.voxel == 0.01
