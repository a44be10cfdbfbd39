"""Traffic for failover tests: a steady sender and receivers that record what arrives."""

from __future__ import annotations

import asyncio
import time

from tests.support.waiting import until
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


async def resumes_once_in_order(stream: Stream, receivers: list[Recorder]) -> float:
    """After a failover: wait until the stream's messages reach the last receiver (on the
    other instance) again, send 20 more, and check that every receiver has each of those
    once and all it got in order, none twice. Returns when delivery resumed
    (`time.monotonic()`). Messages sent before the instances found the new master follow
    the outage rule (their sender's clients only), so only later ones must arrive."""
    channel = stream.channel
    mark = stream.sent
    await until(lambda: receivers[-1].reached(mark, channel), timeout=10)
    resumed = time.monotonic()
    after = stream.sent  # everything from here on was accepted after the recovery
    await until(lambda: stream.sent >= after + 20, timeout=10)
    await stream.stop()
    last = stream.sent - 1
    for receiver in receivers:
        await until(lambda r=receiver: r.seen(f"m{last}"), timeout=10)
        numbers = receiver.numbers(channel)
        arrived = [(m["id"], m["content"]) for m in receiver.messages(channel)]
        assert len(numbers) == len(set(numbers)), f"delivered twice: {arrived}"
        assert numbers == sorted(numbers), f"out of order: {arrived}"
        assert set(range(after, last + 1)) <= set(numbers), f"missing after recovery: {arrived}"
    return resumed


async def flowing(left, right, channel: str) -> tuple[Stream, list[Recorder]]:
    """A sender on `left` publishing 20 messages a second into `channel`, already 10
    in, and two recording receivers: one on `left`, one on `right`."""
    sender = await WsClient.connect(left.port)
    clients = [await WsClient.connect(left.port), await WsClient.connect(right.port)]
    for client in (sender, *clients):
        await client.subscribe(channel)
    receivers = [Recorder(c) for c in clients]
    stream = Stream(sender, channel, per_second=20)
    stream.start()
    await until(lambda: stream.sent >= 10)
    return stream, receivers
