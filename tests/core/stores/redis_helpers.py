"""Building redis-backed stores against a private redis-server."""

from __future__ import annotations

from core.ops.metrics import Metrics
from core.stores.factory import SCRIPTS
from core.stores.keys import Keys
from core.stores.redis_link import RedisLink


async def link_to(url: str) -> RedisLink:
    link = RedisLink(url, Metrics(), SCRIPTS)
    assert await link.connect()
    link.start()
    return link


def keys(prefix: str) -> Keys:
    return Keys(prefix)
