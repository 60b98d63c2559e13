"""RGB-D images -> coloured points of the person, in the participant's own metric frame.

Speaks numpy only. Coordinates: metres, right-handed, y up; the participant's frame has its
origin on the floor under them, facing +z toward their camera (see ``capture.geometry``).
Camera coordinates follow OpenCV: x right, y down, z forward.
"""

from capture.backproject import rgbd_to_points
from capture.synthetic import BodyShape, SyntheticCamera
from capture.types import CropBox, Intrinsics, RGBDFrame

__all__ = ["BodyShape", "CropBox", "Intrinsics", "RGBDFrame", "SyntheticCamera", "rgbd_to_points"]
