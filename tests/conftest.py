"""Fixtures: a private redis-server, in-process server instances, server processes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from plugins import REGISTRY
from relay.instance import Instance
from tests.support import config as test_config
from tests.support.redis_server import RedisServer
from tests.support.server_process import ServerProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, to kill and restart."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    if server.process is not None:
        try:
            server.resume()
        except ProcessLookupError:
            pass
    server.kill()


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def redis_changes(url: str, prefix: str) -> dict:
    return {"store": {"backend": "redis", "redis_url": url, "key_prefix": prefix}}


@pytest.fixture
def servers(io_loop) -> Iterator[Callable[..., Awaitable[Instance]]]:
    """Start in-process instances: `await servers({...config changes...})`."""
    started: list[Instance] = []

    async def start(
        changes: dict | None = None,
        instance_id: str | None = None,
        registry: Mapping[str, type] = REGISTRY,
    ) -> Instance:
        changes = dict(changes or {})
        if instance_id:
            changes = test_config.merge(changes, {"server": {"instance_id": instance_id}})
        instance = Instance(test_config.settings(changes, registry))
        await instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in reversed(started):
        io_loop.run_sync(lambda i=instance: i.stop(timeout=1))


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `server.py` processes: `processes({...config changes...})`."""
    started: list[ServerProcess] = []

    def start(changes: dict | None = None, instance_id: str | None = None) -> ServerProcess:
        config = test_config.merge(test_config.baseline(), changes or {})
        process = ServerProcess(config, tmp_path, instance_id=instance_id).start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process is not None and process.process.poll() is None:
            process.kill()
