"""The transport: the only module that knows Tornado's WebSocket internals.

The engine writes to a client through a `Transport`: write bytes, ask whether bytes are
still waiting, be told when they have gone, close (with a closing handshake) or abort
(drop the TCP connection now), and the peer's address. `TornadoTransport` is that
interface over a Tornado WebSocket connection, and `WebSocketEndpoint` is the Tornado
handler base class that builds it.

Why reach under Tornado's public API at all: a broadcast is framed once and the same
bytes go to every client. Tornado's `write_message` re-encodes per call and wraps each
write in a new asyncio Task; writing the finished frame straight to the socket is 4-7x
cheaper for a fan-out (docs/architecture.md). Everything that takes depends on a few
Tornado attributes, listed in `RELIED_ON`; `tests/core/test_transport.py` checks each
one on a live connection and names the one a Tornado release moved.

Supported Tornado releases: `SUPPORTED_TORNADO` (from, up to but excluding). A release
outside it gets a warning at start-up, and the transport test is the audit to run.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import tornado
import tornado.util
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.util import _websocket_mask

log = logging.getLogger("server")

SUPPORTED_TORNADO = ((6, 6), (6, 7))
CLOSE_PROTOCOL_ERROR = 1002
READ_SIZE = 65536  # what one read of a client's frames takes at most

# (object, attribute) pairs this module uses beyond Tornado's documented API. "handler"
# is the WebSocketHandler, "protocol" its `ws_connection`, "stream" the protocol's
# IOStream, "params" the protocol's settings, "server" the HTTPServer, "util" the module
# tornado.util.
RELIED_ON = (
    ("server", "_sockets"),
    ("server", "_handlers"),
    ("server", "_handle_connection"),
    ("handler", "ws_connection"),
    ("protocol", "stream"),
    ("protocol", "params"),
    ("protocol", "handler"),
    ("protocol", "server_terminated"),
    ("protocol", "_receive_frame_loop"),
    ("protocol", "_handle_message"),
    ("protocol", "_abort"),
    ("protocol", "_fragmented_message_buffer"),
    ("protocol", "_fragmented_message_opcode"),
    ("protocol", "client_terminated"),
    ("protocol", "close_code"),
    ("protocol", "close_reason"),
    ("handler", "on_ws_connection_close"),
    ("util", "_websocket_mask"),
    ("params", "max_message_size"),
    ("stream", "socket"),
    ("stream", "_write_buffer"),
    ("stream", "writing"),
    ("stream", "write"),
    ("stream", "closed"),
    ("stream", "close"),
)


def tornado_supported(version: tuple[int, ...] = tornado.version_info[:2]) -> bool:
    low, high = SUPPORTED_TORNADO
    return low <= tuple(version[:2]) < high


def missing_internals(handler: tornado.websocket.WebSocketHandler, server: HTTPServer) -> list[str]:
    """The `RELIED_ON` attributes that a live, open handler (and the server that accepted
    it) lack, as "protocol.stream"."""
    protocol = getattr(handler, "ws_connection", None)
    stream = getattr(protocol, "stream", None)
    owners = {
        "handler": handler,
        "protocol": protocol,
        "stream": stream,
        "params": getattr(protocol, "params", None),
        "server": server,
        "util": tornado.util,
    }
    return [f"{owner}.{attr}" for owner, attr in RELIED_ON if not hasattr(owners[owner], attr)]


class Transport(Protocol):
    """What the engine needs from a client's connection."""

    peer: str  # the TCP peer's address (a proxy's, behind one)

    def write(self, data: bytes | memoryview) -> None:
        """Send complete WebSocket frames; what the socket does not take now is kept
        and sent in order."""

    def writing(self) -> bool:
        """True while bytes of earlier writes are still waiting to be sent."""

    def buffered(self) -> int:
        """How many bytes of earlier writes are still waiting to be sent."""

    def when_flushed(self, callback: Callable[[bool], None]) -> bool:
        """Call `callback(True)` once everything written so far has been sent (False if
        the connection broke first). Returns False, without calling, if it is closed."""

    def close(self, code: int, reason: str, last: bytes | None = None) -> None:
        """Start the closing handshake with `code`, after sending frame `last` (behind
        what is already in flight)."""

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""

    def closed(self) -> bool:
        """True once the connection is gone."""


class TornadoTransport:
    """`Transport` over a Tornado WebSocket connection's IOStream.

    While the stream holds nothing unsent, a write goes straight to the socket (one
    `send` call, no Future, no Task) and only the unsent rest of a partial write is
    handed to the stream, which keeps bytes in order.
    """

    __slots__ = ("_close", "_sock", "_stream", "peer", "writing")

    def __init__(self, stream: IOStream, close: Callable[[int, str], None], peer: str) -> None:
        self._stream = stream
        self._close = close
        self.peer = peer
        # Direct socket writes only on plain TCP; TLS must go through the stream.
        self._sock: socket.socket | None = stream.socket if type(stream) is IOStream else None
        self.writing: Callable[[], bool] = stream.writing

    @classmethod
    def of(cls, handler: tornado.websocket.WebSocketHandler) -> TornadoTransport:
        """The transport of an open WebSocket handler."""
        stream = handler.ws_connection.stream  # type: ignore[union-attr]
        return cls(stream, handler.close, handler.request.remote_ip or "")

    def write(self, data: bytes | memoryview) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # The peer is gone; closing the stream ends the read loop and on_close runs.
                self._stream.close()
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        try:
            self._stream.write(data)
        except StreamClosedError:
            pass

    def when_flushed(self, callback: Callable[[bool], None]) -> bool:
        try:
            # An empty write resolves once everything written before it has been sent.
            future = self._stream.write(b"")
        except StreamClosedError:
            return False
        future.add_done_callback(lambda f: callback(f.exception() is None))
        return True

    def close(self, code: int, reason: str, last: bytes | None = None) -> None:
        if last is not None and not self._stream.closed():
            try:
                self._stream.write(last)
            except StreamClosedError:
                pass
        self._close(code, reason)

    def buffered(self) -> int:
        waiting = self._stream._write_buffer
        return len(waiting) if waiting is not None else 0

    def abort(self) -> None:
        self._stream.close()

    def closed(self) -> bool:
        return self._stream.closed()

    def limit_send_buffer(self, size: int) -> None:
        """Ask the kernel to buffer at most about `size` unsent bytes for this client, so
        that a client that stops reading shows as backpressure sooner."""
        sock = self._stream.socket
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class _Protocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol with frames read by callbacks instead of its read coroutines,
    closing with 1002 on a frame the client did not mask (RFC 6455 5.1: a server must;
    Tornado accepts it), and letting the handler say why before a close it did not ask
    for (1002, or 1009 for a frame over max_message_size).

    Why its own reader: Tornado reads each frame with three to four awaited reads, and
    an idle connection waits inside seven suspended coroutines (the request's execution,
    the handshake, the read loop, the frame read). Here the handshake returns once the
    connection is open, an idle connection holds one pending read Future, and one read
    takes whatever has arrived and parses every whole frame in it. What a frame means
    (text, close, ping, pong) is still Tornado's `_handle_message`.
    """

    _pending = b""  # read but not yet parsed: the start of a frame
    _ended = False

    async def _receive_frame_loop(self) -> None:  # type: ignore[override]
        self._read(READ_SIZE, partial=True)

    def _read(self, size: int, partial: bool) -> None:
        try:
            future = self.stream.read_bytes(size, partial=partial)
        except StreamClosedError:
            self._end()
            return
        future.add_done_callback(self._on_read)

    def _on_read(self, future: Any) -> None:
        try:
            data = future.result()
        except (Exception, asyncio.CancelledError):  # StreamClosedError, or cancelled
            self._end()
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        self._parse(data, 0)

    def _parse(self, data: bytes, pos: int) -> None:
        try:
            self._parse_frames(data, pos)
        except Exception:
            log.exception("failed to read a frame; dropping the connection")
            self._end()

    def _parse_frames(self, data: bytes, pos: int) -> None:
        """Handle every whole frame in `data` from `pos`, then read more (the rest of a
        frame begun, or whatever comes next)."""
        end = len(data)
        limit = self.params.max_message_size
        while not self.client_terminated:
            available = end - pos
            if available < 2:
                break
            first, second = data[pos], data[pos + 1]
            if not second & 0x80:
                self.close(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
                self._end()
                return
            opcode = first & 0x0F
            length = second & 0x7F
            head = 6  # two header bytes and the four of the mask
            if length >= 126:
                if opcode & 0x08:  # a control frame's payload must be under 126 bytes
                    self._end()
                    return
                head = 8 if length == 126 else 14
                if available < head:
                    break
                length = int.from_bytes(data[pos + 2 : pos + head - 4], "big")
            if first & self.RSV_MASK:  # no extension was negotiated
                self._end()
                return
            fragments = self._fragmented_message_buffer
            if length + (len(fragments) if fragments is not None else 0) > limit:
                self.close(1009, "message too big")
                self._end()
                return
            if available < head + length:
                # The rest of this frame, exactly, before anything else.
                self._pending = data[pos:]
                self._read(head + length - available, partial=False)
                return
            start = pos + head
            payload = _websocket_mask(data[start - 4 : start], data[start : start + length])
            pos = start + length
            final = first & self.FIN
            if opcode & 0x08:
                if not final:  # control frames must not be fragmented
                    self._end()
                    return
            elif opcode == 0:  # continuation
                if fragments is None:
                    self._end()
                    return
                fragments.extend(payload)
                if final:
                    opcode = self._fragmented_message_opcode
                    payload = bytes(fragments)
                    self._fragmented_message_buffer = None
            elif fragments is not None:  # a new message before the last one ended
                self._end()
                return
            elif not final:
                self._fragmented_message_opcode = opcode
                self._fragmented_message_buffer = bytearray(payload)
            if final:
                handled = self._handle_message(opcode, payload)
                if handled is not None and not handled.done():
                    # The next frame waits for this one's handler: a client's messages
                    # are handled in order.
                    handled.add_done_callback(lambda _, rest=data[pos:]: self._parse(rest, 0))
                    return
        if self.client_terminated:
            self._end()
            return
        self._pending = data[pos:] if pos < end else b""
        self._read(READ_SIZE, partial=True)

    def _end(self) -> None:
        """The connection is over (or must be): drop it, once, and tell the handler."""
        if self._ended:
            return
        self._ended = True
        self._pending = b""
        if not (self.client_terminated and self.stream.closed()):
            self._abort()
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        stream = self.stream
        if code is not None and not self.server_terminated and stream is not None:
            last = self.handler.last_words(code, self.params.max_message_size)
            if last is not None:
                try:
                    stream.write(last)
                except StreamClosedError:
                    pass
        super().close(code, reason)


class WebSocketEndpoint(tornado.websocket.WebSocketHandler):
    """Base class of the /ws handler: Tornado's handler without compression, with the
    protocol above, and `transport()` once it is open."""

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return _Protocol(self, False, protocol.params)
        return protocol

    def get_compression_options(self) -> None:
        # No permessage-deflate: it costs ~200 KB per connection and would make
        # every recipient's copy of a broadcast different.
        return None

    def transport(self) -> TornadoTransport:
        """The open connection as a `Transport`."""
        return TornadoTransport.of(self)

    def last_words(self, code: int, max_message_size: int) -> bytes | None:
        """A frame to send before Tornado closes the connection with `code` on its own
        (1009: a frame over `max_message_size`); None sends nothing."""
        return None


# accept() errors that mean "out of descriptors or memory": pause, do not spin.
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
PAUSE_FIRST = 0.05
PAUSE_MAX = 1.0
ACCEPT_BATCH = 128


class WebServer(HTTPServer):
    """Tornado's HTTPServer whose accept loop survives running out of file descriptors.

    Tornado's own loop raises EMFILE out of its handler while the listening socket stays
    readable, so the event loop calls it again at once: a spinning core and a traceback
    per turn. Here the listener pauses instead (50 ms, doubling up to 1 s, while the
    error lasts) and says so at most once per `quiet` seconds.
    """

    def initialize(self, *args: Any, quiet: float = 10.0, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.quiet = quiet
        self.last_said = float("-inf")
        self.pauses_unsaid = 0

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = _Listener(self, sock).remove

    def accepted(self, connection: socket.socket, address: Any) -> None:
        self._handle_connection(connection, address)

    def out_of_resources(self, error: OSError) -> None:
        self.pauses_unsaid += 1
        now = time.monotonic()
        if now - self.last_said >= self.quiet:
            log.error(
                "cannot accept connections (%s): pausing the listener (%d pauses since the "
                "last report, said at most every %gs)",
                error.strerror or error,
                self.pauses_unsaid,
                self.quiet,
            )
            self.last_said = now
            self.pauses_unsaid = 0


class _Listener:
    """Accepts on one listening socket for a `WebServer`, pausing on EMFILE."""

    def __init__(self, server: WebServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.loop = IOLoop.current()
        self.listening = True
        self.pause = PAUSE_FIRST
        self.resuming: object | None = None
        self.loop.add_handler(sock, self.accept, IOLoop.READ)

    def accept(self, fd: Any, events: int) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self.listening:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                if error.errno not in RESOURCE_ERRORS:
                    raise
                self.loop.remove_handler(self.sock)
                self.resuming = self.loop.call_later(self.pause, self.resume)
                self.pause = min(PAUSE_MAX, self.pause * 2)
                self.server.out_of_resources(error)
                return
            self.pause = PAUSE_FIRST
            self.server.accepted(connection, address)

    def resume(self) -> None:
        self.resuming = None
        if self.listening:
            self.loop.add_handler(self.sock, self.accept, IOLoop.READ)

    def remove(self) -> None:
        self.listening = False
        if self.resuming is not None:
            self.loop.remove_timeout(self.resuming)
        else:
            self.loop.remove_handler(self.sock)


def warn_if_unsupported() -> None:
    """Log a warning when the installed Tornado is outside `SUPPORTED_TORNADO`."""
    if not tornado_supported():
        low, high = SUPPORTED_TORNADO
        log.warning(
            "Tornado %s is outside the releases this server is tested with (>= %s, < %s): "
            "run tests/core/test_transport.py before relying on it",
            tornado.version,
            ".".join(map(str, low)),
            ".".join(map(str, high)),
        )
