"""The hub cluster's directory in Redis, and the thread that keeps a hub's entry alive.

Every live hub has one key, ``holoport:hub:<N>``: its ``HubRecord`` (msgpack), written with
a lease (a TTL) and rewritten several times a lease, so a hub that stops renewing vanishes
from everyone's view when its key expires; nothing else in Redis names it. ``INCR
holoport:hub_seq`` numbers the hubs (member ids are ``N << 32 | k``, unique across the
cluster without asking Redis per join). Redis content is read as untrusted: a malformed
record is skipped, never a crash. docs/cluster.md has the design.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from holoport.wire import MAX_HUB_NO

log = logging.getLogger("holoport.cluster")

PASSWORD_ENV = "HOLOPORT_REDIS_PASSWORD"
MAX_TEXT = 256  # characters in a record's strings
MAX_ROOMS = 100_000  # rooms one record lists
MAX_COUNT = 1 << 31  # seats, members, a room's members


class ClusterError(RuntimeError):
    """Redis unreachable or refusing us: the message says what to do."""


class ClusterUnavailable(ClusterError):
    """Redis went away (connection/timeout): meetings go on without it."""


@dataclass(frozen=True)
class HubRecord:
    """One hub as the others see it: where to reach it, how loaded it is, which rooms it serves."""

    id: int  # the hub's number in the cluster (INCR of holoport:hub_seq); member ids are id << 32 | k
    site: str  # e.g. "edge-1"
    endpoint: str  # where participants connect (--advertise)
    cascade: str  # where other hubs connect (its cascade socket)
    key: str = ""  # z85 public CURVE key participants use for this hub; "" on a plain hub
    seats: int = 6
    members: int = 0  # local participants
    mbps: float = 0.0  # forwarded Mbit/s, recent
    cpu: float = 0.0  # the hub process's CPU use (1.0 = one core), recent
    rooms: dict[str, int] = field(default_factory=dict)  # room -> its local members on this hub
    started: float = 0.0  # wall clock

    def to_bytes(self) -> bytes:
        return msgpack.packb({f.name: getattr(self, f.name) for f in fields(self)}, use_bin_type=True)

    @classmethod
    def from_bytes(cls, raw: bytes) -> HubRecord:
        """A record read from Redis, every field checked; ValueError on anything malformed.
        Fields this version does not know are ignored (a newer hub may add some)."""
        try:
            body = msgpack.unpackb(raw, raw=False)
        except Exception as exc:  # msgpack raises several types for bad input
            raise ValueError(f"not a msgpack record: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError("a record is a msgpack map")
        rooms = body.get("rooms", {})
        if not isinstance(rooms, dict) or len(rooms) > MAX_ROOMS:
            raise ValueError(f"rooms: a map of at most {MAX_ROOMS} rooms")
        for room, n in rooms.items():
            _text("a room's name", room, 1, 64)
            _int("a room's members", n, 0, MAX_COUNT)
        return cls(id=_int("id", body.get("id"), 0, MAX_HUB_NO),
                   site=_text("site", body.get("site")),
                   endpoint=_text("endpoint", body.get("endpoint")),
                   cascade=_text("cascade", body.get("cascade")),
                   key=_text("key", body.get("key", "")),
                   seats=_int("seats", body.get("seats", 6), 0, MAX_COUNT),
                   members=_int("members", body.get("members", 0), 0, MAX_COUNT),
                   mbps=_float("mbps", body.get("mbps", 0.0)),
                   cpu=_float("cpu", body.get("cpu", 0.0)),
                   rooms=dict(rooms),
                   started=_float("started", body.get("started", 0.0)))

    def serves(self, room: str) -> bool:
        return room in self.rooms


def _text(name: str, v: Any, lo: int = 0, hi: int = MAX_TEXT) -> str:
    if not isinstance(v, str) or not lo <= len(v) <= hi:
        raise ValueError(f"{name}: a string of {lo}..{hi} characters")
    return v


def _int(name: str, v: Any, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{name}: an integer in {lo}..{hi}")
    return v


def _float(name: str, v: Any) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: a finite number >= 0")
    return float(v)


# Raise the counter to at least this hub's number while renewing its lease: after a Redis
# restart the counter is lost, and a new hub must not be given a live hub's number.
_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local seq = tonumber(redis.call('GET', KEYS[2])) or 0
if seq < tonumber(ARGV[3]) then redis.call('SET', KEYS[2], ARGV[3]) end
"""

# The next number, passing over any a live hub holds (it may not have raised the counter yet).
_NEXT_ID = """
local n
repeat n = redis.call('INCR', KEYS[1]) until redis.call('EXISTS', ARGV[1] .. n) == 0
return n
"""


class Registry:
    """The cluster's directory in Redis: one key per live hub, written with a lease (TTL).

    Every call either answers within a few ``timeout_s`` or raises: ``ClusterUnavailable``
    when Redis cannot be reached, ``ClusterError`` when it refuses us. No retries: the agent
    thread tries again on its next round anyway, and a dead Redis must not hold anyone up.
    """

    def __init__(self, url: str, password: str | None = None, *, lease_s: float = 2.0, prefix: str = "holoport",
                 timeout_s: float = 0.5) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"a cluster URL is redis://HOST:PORT[/DB], rediss://... or unix://PATH, got {url!r}")
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError("a password in the cluster URL is refused: credentials come from "
                             f"--redis-password-file or {PASSWORD_ENV}, never the command line "
                             "(every user of the machine can read it)")
        if lease_s <= 0 or timeout_s <= 0:
            raise ValueError("lease_s and timeout_s must be > 0")
        self.url = url
        self.prefix = prefix
        self.lease_ms = max(1, round(lease_s * 1000))
        self._seq = f"{prefix}:hub_seq"
        self._client = redis.Redis.from_url(url, password=password, socket_timeout=timeout_s,
                                            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        self._publish = self._client.register_script(_PUBLISH)
        self._next_id = self._client.register_script(_NEXT_ID)

    @classmethod
    def from_options(cls, url: str, password_file: str | None = None, **kw: Any) -> Registry:
        """The password from ``password_file`` if given, else from $HOLOPORT_REDIS_PASSWORD, else none."""
        password = os.environ.get(PASSWORD_ENV) or None
        if password_file is not None:
            path = Path(password_file)
            if not path.is_file():
                raise FileNotFoundError(f"no Redis password file at {path}: write the password "
                                        f"(only) into it, readable by this user alone")
            password = path.read_text().strip()
            if not password:
                raise ValueError(f"the Redis password file {path} is empty")
        return cls(url, password, **kw)

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    def _key(self, hub_id: int) -> str:
        return f"{self.prefix}:hub:{hub_id}"

    def _call(self, what: Callable[[], Any]) -> Any:
        """Run one exchange with Redis, its failures as our errors, each saying what to do."""
        try:
            return what()
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            raise ClusterError(f"Redis at {self.url} refused us ({exc}): check --redis-password-file / "
                               f"{PASSWORD_ENV}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise ClusterUnavailable(f"no Redis answered at {self.url} ({exc}): start one "
                                     f"(`redis-server --port 6379`) or check --cluster") from None
        except redis.RedisError as exc:
            raise ClusterError(f"Redis at {self.url} failed: {exc}") from None

    def check(self) -> None:
        """PING, so a hub refuses to start (saying why) rather than run outside its cluster."""
        self._call(self._client.ping)

    def next_hub_id(self) -> int:
        n = int(self._call(lambda: self._next_id(keys=[self._seq], args=[f"{self.prefix}:hub:"])))
        if n > MAX_HUB_NO:
            raise ClusterError(f"the cluster at {self.url} has handed out all {MAX_HUB_NO} hub numbers: "
                               f"stop every hub, then DEL {self._seq}")
        return n

    def publish(self, record: HubRecord) -> None:
        """Write (renew) this hub's record for one lease."""
        self._call(lambda: self._publish(keys=[self._key(record.id), self._seq],
                                         args=[record.to_bytes(), self.lease_ms, record.id]))

    def withdraw(self, hub_id: int) -> None:
        """Remove the record at once (a clean shutdown), rather than after its lease."""
        self._call(lambda: self._client.delete(self._key(hub_id)))

    def hubs(self) -> list[HubRecord]:
        """Every live hub's record, by number; malformed ones are skipped."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + ":hub:*"
        keys = self._call(lambda: list(self._client.scan_iter(match=pattern, count=1000)))
        out = []
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            for key, raw in zip(chunk, self._call(lambda c=chunk: self._client.mget(c)), strict=True):
                if raw is None:  # expired since the scan
                    continue
                try:
                    record = HubRecord.from_bytes(raw)
                    if key != self._key(record.id).encode():
                        raise ValueError(f"it names hub {record.id}")
                except ValueError as exc:
                    log.debug("skipped the malformed record at %s: %s", key, exc)
                    continue
                out.append(record)
        return sorted(out, key=lambda r: r.id)

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class ClusterView:
    """What the agent last read of the cluster; immutable, so the hub's loop reads it without locks."""

    hubs: tuple[HubRecord, ...] = ()
    ok: bool = False  # the last exchange with Redis worked
    at: float = 0.0  # time.monotonic() of the last successful read

    def serving(self, room: str, but: int | None = None) -> list[HubRecord]:
        return [h for h in self.hubs if h.id != but and h.serves(room)]


class ClusterAgent:
    """Keeps a hub's record alive in Redis and reads the others', in a thread of its own (Redis calls
    block; the hub's loop never waits on Redis: it reads ``view``, an immutable snapshot, swapped whole).

    ``load()`` gives the hub's current ``{"members", "mbps", "rooms"}``; it is called from this
    thread, so the hub hands it values it replaces whole rather than mutates.
    """

    LOADS = ("members", "mbps", "rooms")  # the fields load() may change

    def __init__(self, registry: Registry, record: HubRecord, load: Callable[[], dict],
                 every: float = 0.25) -> None:
        self.registry = registry
        self.record = record if record.started else replace(record, started=time.time())
        self.load = load
        self.every = every
        self.view = ClusterView()
        self.published = 0  # records written
        self.outages = 0  # times Redis went away (or refused us)
        self._down = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock = (time.monotonic(), time.process_time())

    def start(self) -> ClusterAgent:
        """Publish once here (so the record and ``view`` are there when this returns), then renew in a thread."""
        if self._thread is None:
            self._round()
            self._thread = threading.Thread(target=self._run, name="holoport-cluster", daemon=True)
            self._thread.start()
        return self

    def publish_now(self) -> None:
        """Publish at once rather than at the next round (e.g. a room appeared on this hub)."""
        self._wake.set()

    def stop(self, withdraw: bool = True) -> None:
        """End the thread; with ``withdraw`` remove the record now rather than when its lease ends."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if withdraw:
            try:
                self.registry.withdraw(self.record.id)
            except ClusterError as exc:
                log.info("could not withdraw hub %d's record (its lease will end): %s", self.record.id, exc)

    def __enter__(self) -> ClusterAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every)
            self._wake.clear()
            if not self._stop.is_set():
                self._round()

    def _round(self) -> None:
        try:
            self._publish_and_read()
        except ClusterError as exc:
            self.view = replace(self.view, ok=False)
            if not self._down:
                self._down = True
                self.outages += 1
                if isinstance(exc, ClusterUnavailable):
                    log.warning("Redis at %s unreachable: meetings go on; new rooms across hubs wait for it",
                                self.registry.url)
                else:
                    log.warning("%s; meetings go on; new rooms across hubs wait for it", exc)
        except Exception:
            log.exception("the cluster agent's round failed; it goes on")

    def _publish_and_read(self) -> None:
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._clock
        self._clock = (now, cpu)
        load = self.load()
        changes: dict[str, Any] = {k: load[k] for k in self.LOADS if k in load}
        if "rooms" in changes:
            changes["rooms"] = dict(changes["rooms"])
        record = replace(self.record, **changes, cpu=(cpu - cpu_then) / max(now - then, 1e-6))
        self.registry.publish(record)
        self.record = record
        self.published += 1
        if self._down:
            self._down = False
            log.info("Redis is back: record published again")
        self.view = ClusterView(tuple(self.registry.hubs()), True, time.monotonic())
