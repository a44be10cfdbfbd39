"""Traffic for failover tests: a steady sender and receivers that record what arrives."""

from __future__ import annotations

import asyncio

from tests.support.ws_client import Closed, WsClient


class Stream:
    """A client sending numbered messages ("m0", "m1", ...) at a steady rate."""

    def __init__(self, client: WsClient, channel: str, per_second: float) -> None:
        self.client = client
        self.channel = channel
        self.every = 1 / per_second
        self.sent = 0
        self.task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        await self.task

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.client.publish(self.channel, f"m{self.sent}")
            self.sent += 1
            try:
                await asyncio.wait_for(self._stop.wait(), self.every)
            except TimeoutError:
                pass


class Recorder:
    """Reads a client's frames in the background; what arrived, by channel."""

    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.frames: list[dict] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.client.recv(timeout=3600)
            except Closed:
                return
            self.frames.append(frame)

    def messages(self, channel: str) -> list[dict]:
        return [
            f for f in self.frames if f.get("type") == "message" and f.get("channel") == channel
        ]

    def contents(self, channel: str) -> list[str]:
        return [f["content"] for f in self.messages(channel)]

    def seen(self, content: str) -> bool:
        return any(f.get("content") == content for f in self.frames)

    def numbers(self, channel: str) -> list[int]:
        """The numbers of a Stream's messages, in arrival order."""
        return [int(c[1:]) for c in self.contents(channel) if c.startswith("m")]

    def reached(self, number: int, channel: str) -> bool:
        """Whether a Stream's message numbered `number` or later has arrived."""
        return any(n >= number for n in self.numbers(channel))
