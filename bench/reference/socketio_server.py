#!/usr/bin/env python3
"""Reference: python-socketio's AsyncServer with AsyncRedisManager, on aiohttp.

Every `message` event a client emits is emitted to every connected client (the sender
too). With AsyncRedisManager an emit is published to Redis and delivered by each
server's subscription, so several of these processes on one Redis act as one server.
Clients speak engine.io v4 / socket.io v5 over the WebSocket transport:

    python bench/reference/socketio_server.py --port 9000 --redis-url redis://127.0.0.1:6379/0
    # ws://127.0.0.1:9000/socket.io/?EIO=4&transport=websocket
"""

from __future__ import annotations

import argparse
import logging

import socketio
from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(args.redis_url),
        logger=False,
        engineio_logger=False,
        # Handle a client's events one after another: with the default (a task per
        # event) two emits can reach Redis in either order, and receivers see one
        # sender's messages out of order.
        async_handlers=False,
    )

    @sio.on("message")
    async def message(sid: str, data: object) -> None:
        await sio.emit("message", data)

    app = web.Application()
    sio.attach(app)
    # The backlog ours listens with: a connection storm measures the servers, not drops.
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
