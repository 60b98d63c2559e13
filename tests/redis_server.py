"""The cluster tests' redis-server (benchmarks/redis_process.py) as a pytest fixture and a skip mark."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.redis_process import NOT_INSTALLED, REDIS_SERVER, RedisServer, free_port

__all__ = ["NOT_INSTALLED", "REDIS_SERVER", "RedisServer", "free_port", "redis_server_fixture", "requires_redis"]

requires_redis = pytest.mark.skipif(REDIS_SERVER is None, reason=NOT_INSTALLED)


@pytest.fixture(name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """A running RedisServer (``redis_server`` in a test's arguments), or the test skipped.
    Imported under this other name so that the arguments do not shadow the import."""
    if REDIS_SERVER is None:
        pytest.skip(NOT_INSTALLED)
    with RedisServer() as server:
        yield server
