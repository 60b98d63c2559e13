"""Capture accuracy: the lens, Kinect and calibration figures of docs/capture.md, measured.

Each check against something our code does not produce (tests/test_lens.py,
test_azure_kinect.py and test_calibration.py assert bounds on the same quantities):

- ``lens vs OpenCV``: the largest difference between our ray table (capture.lens.rays) and
  OpenCV's undistortPoints, over every pixel of an Azure Kinect depth lens at half
  resolution (the factory coefficients, as tests/test_lens.py), on the z = 1 plane and in
  pixels (times fx);
- ``Kinect field of view``: along the principal row and column of the recording's depth
  camera (<data>/rgbd/azure-kinect/recording.mkv), through the ray table and through a
  pinhole with the same fx, fy, cx, cy (Microsoft gives 75 x 65 degrees for NFOV unbinned);
- ``Kinect wall flatness``: the RMS distance from a fitted plane of the wall at the image's
  left edge, through the ray table and through a pinhole;
- ``calibration``: ``capture.calibration.calibrate`` on <data>/calibration/azure-kinect-charuco
  (ChArUco on the colour and IR images, solvePnP per camera): the depth-to-colour translation
  and rotation, and their distance to the data README's value, which was recovered from
  the same two images by the same method (so this is agreement with a reference made the
  same way, not accuracy against ground truth), and to another Kinect unit's factory
  extrinsic for scale; and each camera's board-fit RMS and corner count.

Records: check, what, value, unit.

Run: python -m benchmarks.capture_accuracy --json docs/bench/capture-accuracy.json \
         --markdown docs/bench/capture-accuracy.md
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main
from holoport.data import data_root

COLUMNS = ["check", "what", "value", "unit"]
# An Azure Kinect's factory depth lens at half resolution (as tests/test_lens.py).
DEPTH_K = dict(width=320, height=288, fx=252.3, fy=252.4, cx=166.1, cy=174.2,
               distortion=(0.548, -0.0210, 2.06e-5, -7.21e-5, -0.00265, 0.890, 0.0861, -0.0139), max_radius=1.74)
README_T_MM = (-32.5, -1.7, 4.3)  # data/README.md: depth -> colour of the ChArUco pair
README_ANGLE_DEG = 5.06
FACTORY_T_MM = (-32.08, -2.21, 3.88)  # another unit's factory extrinsic (rgbd/azure-kinect)
FACTORY_ANGLE_DEG = 4.94


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    add_output_arguments(parser)


def lens(records: list[dict]) -> None:
    import cv2

    from capture import Intrinsics
    from capture.lens import rays

    k = Intrinsics(**DEPTH_K)
    uv = np.stack(np.meshgrid(np.arange(k.width), np.arange(k.height)), -1).reshape(-1, 1, 2).astype(np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    ref = cv2.undistortPoints(uv, k.matrix, k.coefficients, None, None, criteria=criteria).reshape(k.height, k.width, 2)
    ours = rays(k)
    valid = ~np.isnan(ours[..., 0])
    worst = float(np.abs(ours[valid] - ref[valid]).max())
    records += [{"check": "lens vs OpenCV", "what": "largest ray difference, z = 1 plane", "value": worst, "unit": ""},
                {"check": "lens vs OpenCV", "what": "the same in pixels (x fx)", "value": worst * k.fx, "unit": "px"},
                {"check": "lens vs OpenCV", "what": "pixels with a ray", "value": float(valid.mean()), "unit": "share"}]


def kinect(records: list[dict], mkv: Path) -> None:
    from capture import rgbd_to_points
    from capture.azure_kinect import AzureKinectRecording
    from capture.lens import rays

    with AzureKinectRecording(mkv) as rec:
        f = rec.read()
    k = f.intrinsics

    def fov(table):
        row, col = table[round(k.cy), :, 0], table[:, round(k.cx), 1]
        return (np.degrees(np.arctan(np.nanmax(row)) - np.arctan(np.nanmin(row))),
                np.degrees(np.arctan(np.nanmax(col)) - np.arctan(np.nanmin(col))))

    pinhole = dataclasses.replace(k, distortion=(), max_radius=0.0)
    for name, kk in (("ray table", k), ("pinhole", pinhole)):
        h, v = fov(rays(kk))
        records += [{"check": "Kinect field of view", "what": f"{name}, horizontal", "value": float(h), "unit": "deg"},
                    {"check": "Kinect field of view", "what": f"{name}, vertical", "value": float(v), "unit": "deg"}]

    def plane_rms(frame):
        sub = dataclasses.replace(frame, depth=frame.depth.copy())
        mask = np.zeros_like(sub.depth, bool)
        mask[60:300, 40:230] = True  # the wall at the image's left edge (as tests/test_azure_kinect.py)
        sub.depth[~mask] = 0
        p, _ = rgbd_to_points(sub, box=None)
        centred = p - p.mean(0)
        normal = np.linalg.svd(centred, full_matrices=False)[2][2]
        return float(np.sqrt(np.mean((centred @ normal) ** 2)))

    records += [{"check": "Kinect wall flatness", "what": "RMS from a plane, ray table", "value": plane_rms(f) * 1e3,
                 "unit": "mm"},
                {"check": "Kinect wall flatness", "what": "RMS from a plane, pinhole",
                 "value": plane_rms(dataclasses.replace(f, intrinsics=dataclasses.replace(k, distortion=()))) * 1e3,
                 "unit": "mm"}]


def calibration(records: list[dict], folder: Path) -> None:
    from capture.calibration import CharucoBoard, calibrate, load_opencv_intrinsics, rotation_angle_deg

    board = CharucoBoard.from_json(folder / "board_plane.json")
    images = {"color": folder / "color-0.jpg", "ir": folder / "ir-0.png"}
    intrinsics = {"color": load_opencv_intrinsics(folder / "calib_color.yml"),
                  "ir": load_opencv_intrinsics(folder / "calib_ir.yml")}
    rig = calibrate(images, intrinsics, board, reference="color")
    pose = rig.pose("ir")  # IR (depth) camera -> colour camera
    t = pose[:3, 3] * 1000
    angle = rotation_angle_deg(pose)
    c = "calibration (depth -> colour)"
    records += [{"check": c, "what": f"t {axis}", "value": float(v), "unit": "mm"}
                for axis, v in zip("xyz", t, strict=True)]
    records += [{"check": c, "what": "rotation", "value": float(angle), "unit": "deg"},
                {"check": c, "what": "translation from the data README's (same images, same method)",
                 "value": float(np.linalg.norm(t - README_T_MM)), "unit": "mm"},
                {"check": c, "what": "rotation from the data README's (same images, same method)",
                 "value": float(abs(angle - README_ANGLE_DEG)), "unit": "deg"},
                {"check": c, "what": "translation from another unit's factory extrinsic",
                 "value": float(np.linalg.norm(t - FACTORY_T_MM)), "unit": "mm"},
                {"check": c, "what": "rotation from another unit's factory extrinsic",
                 "value": float(abs(angle - FACTORY_ANGLE_DEG)), "unit": "deg"}]
    for cam in rig.cameras:
        records.append({"check": c, "what": f"{cam.name} board fit RMS", "value": float(cam.reprojection_rms_px),
                        "unit": "px"})


def run(args: argparse.Namespace) -> int:
    data = args.data or data_root()
    records: list[dict] = []
    lens(records)
    mkv = data / "rgbd" / "azure-kinect" / "recording.mkv"
    if mkv.is_file():
        kinect(records, mkv)
    else:
        print(f"no Azure Kinect recording at {mkv}: its checks are left out")
    folder = data / "calibration" / "azure-kinect-charuco"
    if (folder / "board_plane.json").is_file():
        calibration(records, folder)
    else:
        print(f"no ChArUco calibration data at {folder}: the calibration check is left out")
    emit(records, COLUMNS, "Capture accuracy: lens, Kinect geometry, calibration", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
