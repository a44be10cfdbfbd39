"""The transport's frame reader, over real sockets: frames however the bytes arrive,
in order, control frames between fragments, and an idle connection that holds no
suspended task (the reason the reader is callbacks rather than Tornado's coroutines)."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
import tornado.netutil
import tornado.web

from core.transport import WebServer, WebSocketEndpoint
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import until


class Recorder(WebSocketEndpoint):
    """Records each message; handling one takes some loop turns, as the server's does
    (a Redis round trip), and a shorter message more of them, so a reader that did not
    wait for each handler before the next frame would reorder them."""

    def initialize(self, received: list, opened: list) -> None:
        self.received = received
        self.opened = opened

    def open(self) -> None:
        self.opened.append(self)

    async def on_message(self, message: str | bytes) -> None:
        for _ in range(6 - len(message)):
            await asyncio.sleep(0)
        self.received.append(message)


@pytest.fixture
def recorder(io_loop):
    received: list = []
    opened: list = []
    app = tornado.web.Application(
        [(r"/ws", Recorder, {"received": received, "opened": opened})],
        websocket_max_message_size=1000,
    )
    server = WebServer(app)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield sockets[0].getsockname()[1], received, opened
    server.stop()


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame as it goes on the wire."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += struct.pack("!BH", 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.gen_test(timeout=20)
async def test_a_frame_that_arrives_a_byte_at_a_time_is_one_message(recorder):
    port, received, _ = recorder
    client = await RawWebSocket.connect(port)
    # Short, 16-bit length: each header form split at every byte.
    wire = masked(0x1, b"short") + masked(0x1, b"x" * 300)
    for i in range(len(wire)):
        client.writer.write(wire[i : i + 1])
        await client.writer.drain()
        await asyncio.sleep(0.001)  # one byte per TCP segment, read by itself
    await until(lambda: len(received) == 2)
    assert received == ["short", "x" * 300]


@pytest.mark.gen_test(timeout=20)
async def test_many_frames_in_one_write_are_handled_in_order(recorder):
    port, received, _ = recorder
    client = await RawWebSocket.connect(port)
    client.writer.write(b"".join(masked(0x1, f"m{i}".encode()) for i in range(500)))
    await until(lambda: len(received) == 500)
    assert received == [f"m{i}" for i in range(500)]


@pytest.mark.gen_test(timeout=20)
async def test_a_ping_between_fragments_is_answered_and_the_message_assembled(recorder):
    port, received, _ = recorder
    client = await RawWebSocket.connect(port)
    client.writer.write(
        masked(0x1, b"hello ", fin=False) + masked(0x9, b"are you there") + masked(0x0, b"world")
    )
    assert await client.read_frame() == (0xA, b"are you there")
    await until(lambda: received == ["hello world"])


@pytest.mark.gen_test(timeout=20)
async def test_a_continuation_with_nothing_to_continue_drops_the_connection(recorder):
    port, received, _ = recorder
    client = await RawWebSocket.connect(port)
    client.writer.write(masked(0x0, b"orphan") + masked(0x1, b"after"))
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await client.read_frame()
    assert received == []


@pytest.mark.gen_test(timeout=20)
async def test_a_frame_over_the_limit_closes_with_1009_before_its_payload_arrives(recorder):
    port, received, _ = recorder
    client = await RawWebSocket.connect(port)
    client.writer.write(masked(0x1, b"y" * 1001)[:20])  # the header says 1001 bytes
    assert await client.close_code() == 1009
    assert received == []


@pytest.mark.gen_test(timeout=20)
async def test_the_close_handshake_reaches_the_handler_once(recorder):
    port, _, opened = recorder
    client = await RawWebSocket.connect(port)
    await until(lambda: len(opened) == 1)
    client.writer.write(masked(0x8, struct.pack("!H", 1000) + b"bye"))
    assert await client.close_code() == 1000
    handler = opened[0]
    await until(lambda: handler.close_code == 1000)
    assert handler.close_reason == "bye" and handler.ws_connection is None


@pytest.mark.gen_test(timeout=20)
async def test_an_idle_connection_holds_no_task(recorder):
    port, _, opened = recorder
    before = len(asyncio.all_tasks())
    clients = [await RawWebSocket.connect(port) for _ in range(20)]
    await until(lambda: len(opened) == 20)
    # Tornado's own reader keeps each connection's request task suspended in its read
    # loop (seven coroutine frames, about 2 KB per connection).
    assert len(asyncio.all_tasks()) - before < 5
    for client in clients:
        client.close()
