"""One live instance per instance id.

Counts in Redis are kept per instance id, so two live instances with one id would
overwrite each other's counts (a second instance started with the same `--instance-id`
once let 6 connections in against a limit of 3). At start-up an instance claims its id
with a key that only it refreshes, every `REFRESH` seconds, and that expires `HOLD`
seconds after its holder stops: a second instance finds it held and refuses to start.
An instance restarted after a crash waits at most `HOLD` seconds for its old claim to
lapse.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from core.stores.keys import Keys
from core.stores.redis_link import LinkDown, RedisLink

log = logging.getLogger("store")

REFRESH = 1.0
HOLD = 3.0


class InstanceIdInUse(Exception):
    """Another live instance holds this instance id."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"instance id '{instance_id}' is in use by a live instance sharing this Redis; "
            "give each instance its own (--instance-id)"
        )
        self.instance_id = instance_id


class InstanceClaim:
    """This instance's hold on its id in Redis."""

    def __init__(self, link: RedisLink, keys: Keys, instance_id: str) -> None:
        self.link = link
        self.key = keys.instance_claim(instance_id)
        self.instance_id = instance_id
        self.token = secrets.token_hex(8)
        self._refresher: asyncio.Task | None = None

    async def claim(self) -> None:
        """Take the id, waiting out a lapsed holder; InstanceIdInUse if a live one has it.
        Without Redis there is nothing to check (the claim is made when it returns)."""
        if self.link.up:
            try:
                if not await self._take():
                    log.info(
                        "instance id %s is held in Redis; waiting up to %gs to see whether "
                        "its holder is alive",
                        self.instance_id,
                        HOLD,
                    )
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + HOLD + REFRESH
                    while not await self._take():
                        if loop.time() > deadline:
                            raise InstanceIdInUse(self.instance_id)
                        await asyncio.sleep(REFRESH / 4)
            except LinkDown:
                pass
        self._refresher = asyncio.ensure_future(self._refresh())

    async def _take(self) -> bool:
        taken = await self.link.call("SET", self.key, self.token, "NX", "PX", int(HOLD * 1000))
        return taken is not None

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            if not self.link.up:
                continue
            try:
                holder = await self.link.call(
                    "SET", self.key, self.token, "PX", int(HOLD * 1000), "GET"
                )
            except LinkDown:
                continue
            if holder is not None and holder.decode() != self.token:
                log.error(
                    "instance id %s was taken by another instance while this one could not "
                    "reach Redis: their counts mix; give each instance its own id",
                    self.instance_id,
                )

    async def release(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self.link.up:
            try:
                if await self.link.call("GET", self.key) == self.token.encode():
                    await self.link.call("DEL", self.key)
            except LinkDown:
                pass
