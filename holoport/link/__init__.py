"""5G link emulation: capacity traces, a link model per direction, named profiles, the
simulated-time meeting, rate adaptation, and a real-time relay for live traffic.

See docs/link.md for the model and the measured figures.
"""

from holoport.link.model import Delivery, Link, LinkConfig
from holoport.link.profiles import PROFILES, Profile, get_profile
from holoport.link.trace import Trace

__all__ = ["PROFILES", "Delivery", "Link", "LinkConfig", "Profile", "Trace", "get_profile"]
