"""A redis-server of our own for the cluster's tests and benchmark: on a free loopback port,
nothing saved to disk (as a Redis without persistence comes back after a crash)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from holoport.endpoints import free_tcp_endpoint

REDIS_SERVER = shutil.which("redis-server")
NOT_INSTALLED = "redis-server is not installed (Debian: apt-get install redis-server; make test installs it)"


def free_port() -> int:
    return int(free_tcp_endpoint().rsplit(":", 1)[1])


class RedisServer:
    """One redis-server process; ``restart()`` brings it back on the same port with no data
    (as a Redis without persistence comes back after a crash)."""

    def __init__(self, password: str | None = None, binary: str | None = REDIS_SERVER) -> None:
        if binary is None:
            raise RuntimeError(NOT_INSTALLED)
        self.binary = binary
        self.password = password
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="holoport-redis-")
        self._proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A plain client (with the password) to look at what the code under test wrote."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--dir", self._dir.name, "--logfile", "redis.log"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5.0
        with self.client() as probe:
            while True:
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        log = Path(self._dir.name, "redis.log")
                        self.kill()
                        raise RuntimeError(f"redis-server did not answer on port {self.port}: "
                                           f"{log.read_text()[-2000:] if log.exists() else 'no log'}") from None
                    time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: Redis gone at once, as in a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
