"""Checks on ZeroMQ endpoints shared by the hub and the node."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def is_loopback(endpoint: str) -> bool:
    """True when a tcp:// endpoint stays on this machine (ipc:// and inproc:// always do)."""
    if not endpoint.startswith("tcp://"):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or '*': may be reachable from elsewhere


def require_loopback(endpoint: str, insecure: bool, role: str, encrypted: bool = False) -> None:
    """Refuse unencrypted traffic off this machine unless the user asked for it."""
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"{role} endpoint {endpoint!r} must start with tcp://, ipc:// or inproc://")
    if not is_loopback(endpoint) and not insecure and not encrypted:
        raise ValueError(
            f"{endpoint} is reachable from other machines: encrypt with CURVE keys (make them "
            f"with `holoport keys NAME`; the hub takes --key and --allow, a participant --key "
            f"and --hub-key), use tcp://127.0.0.1:PORT, or pass --insecure to send unencrypted"
        )


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """A loopback endpoint on a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"
