"""CURVE encryption and authentication between participants and the hub.

Every party has a key pair written by ``holoport keys NAME`` (pyzmq's certificate files:
``NAME.key`` holds the public key and may be shared, ``NAME.key_secret`` holds both and
stays with its owner). The hub is a CURVE server with its own secret; it admits only the
participants whose public certificates lie in its allow-list folder, checked by pyzmq's
ZAP authenticator, which logs every refusal. A participant needs its own secret and the
hub's public key. Traffic off this machine is encrypted unless ``--insecure`` is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("holoport.security")


def create_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write a new key pair; returns (public certificate, secret certificate)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"a key name must be a plain file name, got {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = (folder / f"{name}.key", folder / f"{name}.key_secret")
    if public.exists() or secret.exists():
        raise FileExistsError(f"{public} or {secret} exists already: pick another name or folder")
    made = zmq.auth.create_certificates(str(folder), name)
    secret.chmod(0o600)
    return Path(made[0]), Path(made[1])


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, path: str | Path) -> KeyPair:
        """A secret certificate (``NAME.key_secret``)."""
        public, secret = _load(path)
        if secret is None:
            raise ValueError(f"{path} holds no secret key: pass the NAME.key_secret file")
        return cls(public, secret)


def load_public(path: str | Path) -> bytes:
    """The public key in a certificate file (either of the pair)."""
    return _load(path)[0]


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no key file at {path}; make one with `holoport keys NAME`")
    try:
        return zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a key file written by `holoport keys`: {exc}") from None


class HubSecurity:
    """The hub's side: its key pair and the allow-list of participants' public keys.

    The allow-list is the folder's ``*.key`` files, read again whenever an unknown key
    knocks, so an operator admits someone new by copying their public key in while the
    hub runs. Every refusal is logged (with the key) and counted in ``refused``. A key's
    file name is who it is: ``ana.key`` joins as "ana", whatever name its join asks for.
    Admin keys (the hub's own, and those in ``admin``) may see every room's statistics.
    """

    def __init__(self, keys: KeyPair, allow: str | Path, admin: str | Path | None = None) -> None:
        allow = Path(allow)
        if not allow.is_dir():
            raise FileNotFoundError(f"allow-list folder {allow} does not exist: put the "
                                    f"participants' NAME.key files in one")
        if admin is not None and not Path(admin).is_dir():
            raise FileNotFoundError(f"admin key folder {admin} does not exist: put the operators' "
                                    f"NAME.key files in one")
        self.keys = keys
        self.allow = allow
        self.admin_dir = Path(admin) if admin is not None else None
        self.refused = 0
        self._known = self._read_allow_list()
        self._admins = self._read_admins()
        self._auth: ThreadAuthenticator | None = None

    def _read_allow_list(self) -> dict[bytes, str]:
        return _read_key_folder(self.allow)

    def _read_admins(self) -> set[bytes]:
        extra = _read_key_folder(self.admin_dir) if self.admin_dir is not None else {}
        return {self.keys.public, *extra}

    def allowed(self) -> int:
        return len(self._known)

    def name_of(self, z85_key: str | bytes) -> str | None:
        """The name an allow-listed key joins as (its file's name)."""
        key = z85_key.encode() if isinstance(z85_key, str) else z85_key
        return self._known.get(key)

    def is_admin(self, z85_key: str | bytes) -> bool:
        key = z85_key.encode() if isinstance(z85_key, str) else z85_key
        return key in self._admins

    def callback(self, domain: str, z85_key: bytes) -> bool:
        """pyzmq's ZAP credentials hook: is this CURVE public key on the allow-list?"""
        if z85_key in self._known or z85_key in self._admins:
            return True
        self._known = self._read_allow_list()
        self._admins = self._read_admins()
        if z85_key in self._known or z85_key in self._admins:
            return True
        self.refused += 1
        log.warning("refused a participant whose key is not on the allow-list in %s: %s",
                    self.allow, z85_key.decode(errors="replace"))
        return False

    def apply(self, ctx: zmq.Context, sock: zmq.Socket) -> None:
        """Start the ZAP authenticator (once) and make ``sock`` a CURVE server."""
        if self._auth is None:
            self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("holoport.security.zap"))
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=self)
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def _read_key_folder(folder: Path) -> dict[bytes, str]:
    """Public key (z85) -> the name of the file it is in, for every ``NAME.key`` there."""
    keys: dict[bytes, str] = {}
    for path in sorted(folder.glob("*.key")):
        try:
            public = zmq.auth.load_certificate(str(path))[0]
        except (ValueError, OSError) as exc:
            log.warning("skipped %s in the key folder: %s", path, exc)
            continue
        if not 1 <= len(path.stem) <= 64:  # a name the wire carries (wire.SCHEMA)
            log.warning("skipped %s in the key folder: a key's name (its file name) has 1..64 characters", path)
            continue
        keys.setdefault(public, path.stem)
    return keys


@dataclass(frozen=True)
class NodeSecurity:
    """A participant's side: its key pair and the hub's public key."""

    keys: KeyPair
    hub_public: bytes

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_serverkey = self.hub_public


def node_security(key: str | None, hub_key: str | None) -> NodeSecurity | None:
    """CURVE settings from the key files, or None for a plain connection."""
    if not key and not hub_key:
        return None
    if not (key and hub_key):
        raise ValueError("encryption needs both --key (our secret) and --hub-key (the hub's public key)")
    return NodeSecurity(KeyPair.load(key), load_public(hub_key))
