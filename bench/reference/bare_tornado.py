#!/usr/bin/env python3
"""Reference: the plainest Tornado broadcast server.

Every text frame a client sends is written to every connected client (the sender too)
with `write_message`, one call per client: what a first Tornado chat server looks like
(plus TCP_NODELAY, which our server and the asyncio-based references also set).

    python bench/reference/bare_tornado.py --port 9000      # ws://127.0.0.1:9000/ws
"""

from __future__ import annotations

import argparse
import asyncio

import tornado.web
import tornado.websocket


class BroadcastHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, clients: set) -> None:
        self.clients = clients

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.set_nodelay(True)  # as ours does; without it Nagle's algorithm delays frames
        self.clients.add(self)

    def on_message(self, message: str | bytes) -> None:
        for client in list(self.clients):
            try:
                client.write_message(message)
            except tornado.websocket.WebSocketClosedError:
                pass

    def on_close(self) -> None:
        self.clients.discard(self)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    clients: set[BroadcastHandler] = set()
    app = tornado.web.Application([(r"/ws", BroadcastHandler, {"clients": clients})])
    # The backlog ours listens with: a connection storm measures the servers, not drops.
    app.listen(args.port, args.host, backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
