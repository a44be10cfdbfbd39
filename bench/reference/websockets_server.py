#!/usr/bin/env python3
"""Reference: the `websockets` library, broadcasting with `broadcast()`.

Every text frame a client sends goes to every connected client (the sender too) through
`websockets.asyncio.server.broadcast`, which frames the message once per connection and
writes it without waiting. The library's defaults are kept (pings every 20 s).

    python bench/reference/websockets_server.py --port 9000   # ws://127.0.0.1:9000/ws
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    clients: set[ServerConnection] = set()

    async def handler(websocket: ServerConnection) -> None:
        clients.add(websocket)
        try:
            async for message in websocket:
                broadcast(clients, message)
        finally:
            clients.discard(websocket)

    # The backlog ours listens with: a connection storm measures the servers, not drops.
    async with serve(handler, args.host, args.port, backlog=4096):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
