"""Point clouds + poses -> images of the shared room. Speaks numpy only.

World ("room") coordinates: metres, right-handed, y up, the table's centre on the floor at
the origin. Cameras follow OpenCV: x right, y down, z forward.
"""

from render.camera import Camera
from render.renderer import PlacedCloud, Renderer, RenderResult
from render.room import Room

__all__ = ["Camera", "PlacedCloud", "RenderResult", "Renderer", "Room"]
