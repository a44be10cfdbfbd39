"""The transport: the Tornado internals it relies on exist in the installed release, and
it writes, backs up, flushes, closes and aborts as the engine expects, over real sockets."""

from __future__ import annotations

import asyncio
import struct

import pytest
import tornado

from core.transport import RELIED_ON, SUPPORTED_TORNADO, tornado_supported
from core.wire import frames
from tests.core.conftest import connect
from tests.support.waiting import until


def test_the_installed_tornado_is_a_supported_release():
    low, high = SUPPORTED_TORNADO
    assert tornado_supported(), f"tornado {tornado.version} is outside [{low}, {high})"
    assert not tornado_supported((low[0], low[1] - 1)) and not tornado_supported(high)


@pytest.mark.gen_test(timeout=10)
async def test_every_tornado_internal_the_transport_relies_on_exists(endpoint):
    await connect(endpoint)
    _, missing = endpoint[1][-1]
    # Names what a Tornado release moved, e.g. "protocol.stream".
    assert missing == [], f"Tornado {tornado.version} lacks {', '.join(missing)}"
    assert len(RELIED_ON) == len({f"{o}.{a}" for o, a in RELIED_ON})


@pytest.mark.gen_test(timeout=10)
async def test_a_write_reaches_the_client_whole(endpoint):
    client, transport = await connect(endpoint)
    transport.write(frames.text_frame(b'{"n":1}') + frames.text_frame(b'{"n":2}'))
    assert await client.read_json() == {"n": 1}
    assert await client.read_json() == {"n": 2}
    assert transport.peer == "127.0.0.1"


@pytest.mark.gen_test(timeout=15)
async def test_writes_back_up_keep_their_order_and_report_when_flushed(endpoint):
    client, transport = await connect(endpoint, rcvbuf=4096)
    transport.limit_send_buffer(4096)
    payloads = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 8000) for i in range(100)]
    for payload in payloads:
        transport.write(frames.text_frame(payload))
    assert transport.writing()  # the socket took only part: the rest waits, in order
    flushed: list[bool] = []
    assert transport.when_flushed(flushed.append)
    await asyncio.sleep(0.05)
    assert flushed == []  # nothing drains while the client does not read
    got = [await client.read_frame() for _ in payloads]
    assert [payload for _, payload in got] == payloads
    await until(lambda: flushed == [True])
    assert not transport.writing()


@pytest.mark.gen_test(timeout=10)
async def test_close_sends_the_last_frame_then_the_close_code(endpoint):
    client, transport = await connect(endpoint)
    transport.close(frames.CLOSE_TRY_AGAIN, "bye", frames.json_frame({"type": "error"}))
    assert await client.read_json() == {"type": "error"}
    opcode, payload = await client.read_frame()
    assert opcode == 0x8
    assert struct.unpack("!H", payload[:2])[0] == frames.CLOSE_TRY_AGAIN
    assert payload[2:] == b"bye"


@pytest.mark.gen_test(timeout=10)
async def test_abort_drops_the_connection_without_a_closing_handshake(endpoint):
    client, transport = await connect(endpoint)
    transport.abort()
    assert transport.closed()
    with pytest.raises(asyncio.IncompleteReadError):
        await client.read_frame()  # no close frame: the socket just ends
    assert not transport.when_flushed(lambda ok: None)
    transport.write(b"ignored")  # writing to a dropped connection is harmless
