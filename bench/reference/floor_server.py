#!/usr/bin/env python3
"""Reference: the floor, what one Python process can do at best for a broadcast here.

Tornado accepts the WebSocket handshakes and reads the clients' frames (a plain
`WebSocketHandler`, one process, TCP_NODELAY, as the other references
and our server). Then, for every text frame a client sends, the server frame for it is
built once (RFC 6455: FIN and the text opcode, unmasked, a 7-, 16- or 64-bit length)
and handed to each client's socket, the sender's too, with one `socket.send()`: no
queue, no JSON, no channels, no features. What a send does not take (the client's
socket buffer is full) goes through the connection's own write path, its IOStream,
which keeps the bytes in order behind it; while that stream still holds unsent bytes,
later frames for that client go the same way, so nothing is lost, reordered or cut.

It leans on Tornado internals, `handler.ws_connection.stream` and that stream's
`socket`: reaching the raw socket is the point of the exercise. That is acceptable in
this reference only; our server keeps the same reach in core/transport.py, where a test
audits it against each Tornado release.

    python bench/reference/floor_server.py --port 9000      # ws://127.0.0.1:9000/ws

With `--rooms` it is the floor for rooms (bench many-rooms): the least of our protocol a
client there needs. A welcome frame on open; `subscribe` / `unsubscribe` answered and
kept in a dict of rooms; a message's JSON parsed for its channel, its frame (`type`,
`id`, `channel`, `content`) built once and sent to each member of that room with one
`send()`. No history, presence, limits or Redis; `GET /healthz` says how many are
connected, as the harness asks our server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import struct

import tornado.web
import tornado.websocket
import uvloop
from tornado.iostream import IOStream, StreamClosedError


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame carrying `payload`."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def send(stream: IOStream, sock: socket.socket, frame: bytes) -> None:
    """`frame` to one client: straight to its socket, the rest (if any) to its stream."""
    if not stream.writing():
        try:
            sent = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The peer is gone: closing the stream ends its read loop, and on_close runs.
            stream.close()
            return
        if sent == len(frame):
            return
        frame = memoryview(frame)[sent:]
    try:
        stream.write(frame)
    except StreamClosedError:
        pass


class FloorHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, clients: dict) -> None:
        # Each open connection's stream and socket, looked up once at open.
        self.clients = clients

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.set_nodelay(True)  # as ours does; without it Nagle's algorithm delays frames
        stream = self.ws_connection.stream  # type: ignore[union-attr]
        self.clients[self] = (stream, stream.socket)

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return  # a broadcast of text frames: the load sends nothing else
        frame = text_frame(message.encode())
        for stream, sock in tuple(self.clients.values()):
            send(stream, sock, frame)

    def on_close(self) -> None:
        self.clients.pop(self, None)


WELCOME = text_frame(b'{"type":"welcome"}')


class FloorRoomsHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, clients: dict, rooms: dict, ids: itertools.count) -> None:
        self.clients = clients
        self.rooms = rooms  # name -> {handler: (stream, socket)}
        self.ids = ids
        self.joined: set[str] = set()

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.set_nodelay(True)
        stream = self.ws_connection.stream  # type: ignore[union-attr]
        self.me = (stream, stream.socket)
        self.clients[self] = self.me
        send(*self.me, WELCOME)

    def on_message(self, message: str | bytes) -> None:
        frame = json.loads(message)
        kind, channel = frame.get("type"), frame.get("channel")
        if kind == "subscribe":
            self.rooms.setdefault(channel, {})[self] = self.me
            self.joined.add(channel)
            self.answer("subscribed", channel)
        elif kind == "unsubscribe":
            self.leave(channel)
            self.answer("unsubscribed", channel)
        elif channel in self.joined:
            payload = {
                "type": "message",
                "id": str(next(self.ids)),
                "channel": channel,
                "content": frame["content"],
            }
            out = text_frame(json.dumps(payload, separators=(",", ":")).encode())
            for stream, sock in tuple(self.rooms[channel].values()):
                send(stream, sock, out)

    def answer(self, kind: str, channel: str) -> None:
        reply = json.dumps({"type": kind, "channel": channel}, separators=(",", ":"))
        send(*self.me, text_frame(reply.encode()))

    def leave(self, channel: str) -> None:
        self.joined.discard(channel)
        members = self.rooms.get(channel)
        if members is not None:
            members.pop(self, None)
            if not members:
                del self.rooms[channel]

    def on_close(self) -> None:
        self.clients.pop(self, None)
        for channel in tuple(self.joined):
            self.leave(channel)


class Healthz(tornado.web.RequestHandler):
    def initialize(self, clients: dict) -> None:
        self.clients = clients

    def get(self) -> None:
        self.write({"connections": len(self.clients)})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rooms", action="store_true", help="rooms, in our protocol")
    args = parser.parse_args()
    clients: dict[tornado.websocket.WebSocketHandler, tuple[IOStream, socket.socket]] = {}
    if args.rooms:
        ws = (FloorRoomsHandler, {"clients": clients, "rooms": {}, "ids": itertools.count(1)})
    else:
        ws = (FloorHandler, {"clients": clients})
    app = tornado.web.Application([(r"/ws", *ws), (r"/healthz", Healthz, {"clients": clients})])
    # The backlog ours listens with: a connection storm measures the servers, not drops.
    app.listen(args.port, args.host, backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    # On uvloop, as ours runs by default: the floor is the best a Python process can do.
    uvloop.run(main())
