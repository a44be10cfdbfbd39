"""A WebSocket test client that speaks the server's JSON frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.support.timing import scaled


class Closed(Exception):
    """The server closed the connection while a frame was expected."""


class WsClient:
    """Connect, send frames, receive decoded frames with timeouts."""

    def __init__(self, ws: WebSocketClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.received: list[dict] = []
        self.welcome: dict | None = None
        # One reader drains the socket into a queue, so a timed-out wait loses nothing.
        self._frames: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read_forever())

    async def _read_forever(self) -> None:
        while True:
            raw = await self.ws.read_message()
            await self._frames.put(raw)
            if raw is None:
                return

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        session: str | None = None,
        since: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        wait_welcome: bool = True,
        ping_interval: float | None = None,
        source: str | None = None,
    ) -> WsClient:
        params = (("session", session), ("since", since), ("token", token))
        query = urlencode({k: v for k, v in params if v})
        url = f"ws://{host}:{port}/ws" + ("?" + query if query else "")
        request = HTTPRequest(
            url, headers=headers or {}, connect_timeout=scaled(5), network_interface=source
        )
        ws = await websocket_connect(request, ping_interval=ping_interval)
        client = cls(ws, url)
        if wait_welcome:
            client.welcome = await client.recv_type("welcome")
        return client

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def client_id(self) -> str:
        assert self.welcome is not None
        return self.welcome["client_id"]

    @property
    def user(self) -> str:
        return self.welcome["user"]

    @property
    def session(self) -> str:
        assert self.welcome is not None
        return self.welcome["session"]

    async def send(self, cls: str, content: str) -> None:
        await self.ws.write_message(json.dumps({"type": cls, "content": content}))

    async def send_json(self, obj: dict) -> None:
        await self.ws.write_message(json.dumps(obj))

    async def subscribe(self, channel: str, since: str | None = None) -> dict:
        """Subscribe; the `subscribed` answer (or the error frame, if refused)."""
        frame: dict = {"type": "subscribe", "channel": channel}
        if since is not None:
            frame["since"] = since
        await self.send_json(frame)
        return await self.answer(channel, "subscribed")

    async def answer(self, channel: str, kind: str, timeout: float = 3.0) -> dict:
        """The next `kind` or error frame about `channel` (others skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {kind} for {channel} within {timeout}s")
            frame = await self._recv_within(left)
            if frame.get("type") in (kind, "error") and frame.get("channel") == channel:
                return frame

    async def publish(self, channel: str, content: str, cls: str = "normal") -> None:
        await self.send_json({"type": cls, "content": content, "channel": channel})

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.write_message(data, binary=isinstance(data, bytes))

    async def recv(self, timeout: float = 3.0) -> dict:
        """The next frame, decoded; raises Closed if the server closed the socket."""
        return await self._recv_within(scaled(timeout))

    async def _recv_within(self, seconds: float) -> dict:
        raw = await asyncio.wait_for(self._frames.get(), seconds)
        if raw is None:
            self._frames.put_nowait(None)  # stay closed for later reads
        if raw is None:
            raise Closed(f"closed with {self.close_code} {self.ws.close_reason!r}")
        frame = json.loads(raw)
        self.received.append(frame)
        return frame

    async def recv_type(self, kind: str, timeout: float = 3.0, **match: Any) -> dict:
        """The next frame of `kind` (and with the `match` fields), skipping others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {kind} frame {match or ''} within {timeout}s")
            frame = await self._recv_within(left)
            if frame.get("type") == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def messages(self, count: int, timeout: float = 3.0) -> list[dict]:
        """The next `count` message frames (heartbeats and others skipped)."""
        return [await self.recv_type("message", timeout) for _ in range(count)]

    async def nothing_for(self, seconds: float, kind: str = "message") -> None:
        """Assert that no frame of `kind` arrives within `seconds`."""
        try:
            frame = await self.recv_type(kind, seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {kind} frame: {frame}")

    async def closed(self, timeout: float = 3.0) -> int | None:
        """Read until the server closes; return the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        while loop.time() < deadline:
            try:
                await self._recv_within(deadline - loop.time())
            except Closed:
                return self.close_code
            except TimeoutError:
                break
        raise TimeoutError(f"still open after {timeout}s")

    def close(self) -> None:
        self.ws.close()
