"""The wire format: client frames parsed and checked, server frames encoded once.

Server frames are built as complete WebSocket frames (header + JSON payload). A server
frame is unmasked and we do not negotiate compression, so the bytes are identical for
every recipient: a broadcast is encoded and framed once, then written to each socket.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# Error codes of the contract's `error` frame.
TOO_MANY_CONNECTIONS = "too_many_connections"
RATE_LIMITED = "rate_limited"
INVALID_JSON = "invalid_json"
INVALID_MESSAGE = "invalid_message"
SLOW_CONSUMER = "slow_consumer"
INTERNAL_ERROR = "internal_error"

# Close codes of the contract.
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013


def ping_frame(payload: bytes = b"") -> bytes:
    """A WebSocket ping carrying `payload` (at most 125 bytes); the pong echoes it."""
    return bytes((0x89, len(payload))) + payload


# The message classes a client may send, and their priorities (higher goes first),
# unless `plugins.priority.classes` says otherwise.
DEFAULT_CLASSES = MappingProxyType({"critical": 10, "normal": 5, "status": 1})

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class FrameError(Exception):
    """A client frame that breaks the protocol; answered with an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A valid client frame: the class it names and its text."""

    cls: str
    content: str


def parse_client_frame(data: str | bytes, classes: Mapping[str, int]) -> ClientMessage:
    """Check one client frame against the protocol; raise FrameError if it breaks it."""
    if not isinstance(data, str):
        raise FrameError(INVALID_MESSAGE, "binary frames are not accepted; send JSON text")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise FrameError(INVALID_JSON, "the frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError(INVALID_MESSAGE, "expected a JSON object")
    cls = obj.get("type")
    if not isinstance(cls, str) or cls not in classes:
        known = ", ".join(classes)
        raise FrameError(INVALID_MESSAGE, f"'type' must be one of: {known}; got {_show(cls)}")
    content = obj.get("content")
    if not isinstance(content, str):
        raise FrameError(INVALID_MESSAGE, f"'content' must be a string; got {_show(content)}")
    if not content.isascii() and not _is_unicode(content):
        # JSON may spell a lone surrogate ("\ud800"), which no UTF-8 frame can carry.
        raise FrameError(INVALID_MESSAGE, "'content' must be Unicode text (no lone surrogates)")
    return ClientMessage(cls, content)


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _show(value: object) -> str:
    """A client's value, short, for an error message (which must itself be sendable)."""
    if value is None:
        return "nothing"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return "an unreadable value"
    if not _is_unicode(text):
        text = json.dumps(value)  # \u escapes for lone surrogates
    return text if len(text) <= 40 else text[:37] + "..."


def encode(obj: Mapping) -> bytes:
    """JSON for a server frame, compact UTF-8."""
    return _encoder.encode(obj).encode()


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final WebSocket text frame carrying `payload`."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def json_frame(obj: Mapping) -> bytes:
    return text_frame(encode(obj))


def error_payload(code: str, message: str, **extra: object) -> dict:
    return {"type": "error", "code": code, "message": message, **extra}


# A message frame is `{"type":"message","id":ID,` + tail, where the tail carries the
# rest. The id is only known once the broker has ordered the message (in Redis, from
# XADD), so the broker splices it in without re-encoding the rest.
MESSAGE_HEAD = b'{"type":"message","id":"'
HISTORY_HEAD = b'{"type":"message","history":true,"id":"'


def message_tail(sender: str, cls: str, priority: int, content: str, ts: float) -> bytes:
    """Everything of a message frame after its id, encoded once at the sender."""
    body = _encoder.encode(
        {"from": sender, "class": cls, "priority": priority, "content": content, "ts": ts}
    )
    return body[1:].encode()


def message_payload(message_id: str, tail: bytes, history: bool = False) -> bytes:
    head = HISTORY_HEAD if history else MESSAGE_HEAD
    return b"".join((head, message_id.encode(), b'",', tail))
