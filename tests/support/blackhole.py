"""A TCP relay that can stop forwarding without closing: the server then holds a
half-open connection, as when a client's network vanishes."""

from __future__ import annotations

import asyncio


class BlackholeProxy:
    """Forwards 127.0.0.1:port -> target until `vanish()`, then swallows everything."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.vanished = False
        self.replies_swallowed = False  # upstream -> client only
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.append(asyncio.current_task())
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer, reply=True)
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bool = False
    ) -> None:
        while True:
            if self.vanished or (reply and self.replies_swallowed):
                # Stop reading too: the server's writes back up in the kernel, as they
                # would toward a peer that is gone.
                await asyncio.Event().wait()
            data = await reader.read(65536)
            if not data:
                return
            if self.vanished or (reply and self.replies_swallowed):
                continue  # read while it was still forwarding: dropped
            writer.write(data)
            await writer.drain()

    def vanish(self) -> None:
        self.vanished = True

    def swallow_replies(self) -> None:
        """Keep forwarding what clients send, and drop what comes back: requests are
        carried out, their answers never arrive."""
        self.replies_swallowed = True

    async def cut(self) -> None:
        """Close every connection through it (both ends) and forward normally again for
        new ones."""
        tasks, self._tasks = self._tasks, []
        writers, self._writers = self._writers, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            w.close()
        self.vanished = self.replies_swallowed = False

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
