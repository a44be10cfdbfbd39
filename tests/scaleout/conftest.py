"""Fixtures of the scale-out tests: Redis Clusters started by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_cluster import RedisCluster, redis_version


def cluster_changes(cluster: RedisCluster, prefix: str) -> dict:
    return {"store": {"backend": "redis", "redis_cluster": cluster.seeds, "key_prefix": prefix}}


def needs_sharded_pubsub() -> None:
    if redis_version() < (7, 0):
        pytest.skip("Redis Cluster's sharded pub/sub needs redis-server 7.0 or newer")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One 3-master, 3-replica cluster for the tests that do not break it."""
    needs_sharded_pubsub()
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of this test alone, to kill and freeze nodes of."""
    needs_sharded_pubsub()
    cluster = RedisCluster(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()
