"""A bare WebSocket client over a raw socket, for clients that misbehave on purpose:
one that never reads, never answers pings, or reads with a tiny receive buffer."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

from tests.support.timing import scaled


class RawWebSocket:
    """Handshake, masked frames out, frames in; nothing automatic (no pongs)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws",
        *,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawWebSocket:
        sock = socket.socket()
        if rcvbuf is not None:
            # Set before connecting so the window is small from the handshake on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # A small stream limit keeps asyncio from draining the socket behind our back:
        # with a tiny rcvbuf, data the test does not read stays in the network.
        limit = rcvbuf if rcvbuf is not None else 2**24
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
        if b" 101 " not in status.split(b"\r\n", 1)[0]:
            raise ConnectionError(status.decode(errors="replace"))
        return cls(reader, writer)

    def send_frame(
        self, opcode: int, payload: bytes, fin: bool = True, masked: bool = True
    ) -> None:
        mask = os.urandom(4) if masked else b""
        n = len(payload)
        bit = 0x80 if masked else 0
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([bit | n])
        elif n < 65536:
            head += struct.pack("!BH", bit | 126, n)
        else:
            head += struct.pack("!BQ", bit | 127, n)
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + payload)

    def send_json(self, obj: dict) -> None:
        self.send_frame(0x1, json.dumps(obj).encode())

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; raises IncompleteReadError at EOF."""

        async def read() -> tuple[int, bytes]:
            b1, b2 = await self.reader.readexactly(2)
            n = b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b1 & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(read(), scaled(timeout))

    async def read_json(self, timeout: float = 5.0) -> dict:
        """The next text frame, decoded (control frames are skipped, not answered)."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                raise ConnectionResetError(f"closed: {payload[:2].hex()} {payload[2:]!r}")

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the close frame; its code (None if the socket just ended)."""
        try:
            while True:
                opcode, payload = await self.read_frame(timeout)
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        except asyncio.IncompleteReadError:
            return None

    def close(self) -> None:
        self.writer.close()
