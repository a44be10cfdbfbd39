"""The wire format: client frames parsed and checked, server frames encoded once.

Server frames are built as complete WebSocket frames (header + JSON payload). A server
frame is unmasked and we do not negotiate compression, so the bytes are identical for
every recipient: a broadcast is encoded and framed once, then written to each socket.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from core.wire.channels import is_channel_name

# Error codes of the contract's `error` frame.
TOO_MANY_CONNECTIONS = "too_many_connections"
RATE_LIMITED = "rate_limited"
INVALID_JSON = "invalid_json"
INVALID_MESSAGE = "invalid_message"
SLOW_CONSUMER = "slow_consumer"
INTERNAL_ERROR = "internal_error"
INVALID_CHANNEL = "invalid_channel"
TOO_MANY_CHANNELS = "too_many_channels"
NOT_SUBSCRIBED = "not_subscribed"
FORBIDDEN = "forbidden"
UNAUTHORIZED = "unauthorized"

# Client frame types that are not message classes (a class of one of these names is a
# configuration error).
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
PRESENCE = "presence"
REFRESH = "refresh"
COMMANDS = frozenset({SUBSCRIBE, UNSUBSCRIBE, PRESENCE, REFRESH})

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


# Frames of the server itself (welcome, history, heartbeats, presence events) go ahead
# of every message class in a connection's queue.
SYSTEM_PRIORITY = 1 << 30

# The message classes a client may send, and their priorities (higher goes first),
# unless `plugins.priority.classes` says otherwise.
DEFAULT_CLASSES = MappingProxyType({"critical": 10, "normal": 5, "status": 1})

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class FrameError(Exception):
    """A client frame that breaks the protocol; answered with an error frame."""

    def __init__(self, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra  # more fields of the error frame (`channel`)


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A valid message from a client: its class, its text, and where it goes (None: the
    default channel)."""

    cls: str
    content: str
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """A valid request from a client: subscribe, unsubscribe, presence or refresh."""

    kind: str
    channel: str | None = None
    since: str | None = None  # subscribe: recover from this message id
    token: str | None = None  # refresh: the new token


def parse_client_frame(
    data: str | bytes, classes: Mapping[str, int]
) -> ClientMessage | ClientCommand:
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
    if isinstance(cls, str) and cls in COMMANDS:
        return _command(cls, obj)
    if not isinstance(cls, str) or cls not in classes:
        known = ", ".join([*classes, *sorted(COMMANDS)])
        raise FrameError(INVALID_MESSAGE, f"'type' must be one of: {known}; got {_show(cls)}")
    channel = obj.get("channel")
    if channel is not None:
        _check_channel(channel)
    content = obj.get("content")
    if not isinstance(content, str):
        raise FrameError(INVALID_MESSAGE, f"'content' must be a string; got {_show(content)}")
    if not content.isascii() and not _is_unicode(content):
        # JSON may spell a lone surrogate ("\ud800"), which no UTF-8 frame can carry.
        raise FrameError(INVALID_MESSAGE, "'content' must be Unicode text (no lone surrogates)")
    return ClientMessage(cls, content, channel)


def _command(kind: str, obj: dict) -> ClientCommand:
    if kind == REFRESH:
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise FrameError(INVALID_MESSAGE, f"'token' must be a string; got {_show(token)}")
        return ClientCommand(kind, token=token)
    channel = obj.get("channel")
    _check_channel(channel)
    since = obj.get("since") if kind == SUBSCRIBE else None
    # A since that is not an id is ignored, as if absent (the contract's rule for since).
    return ClientCommand(kind, channel, since if isinstance(since, str) else None)


def _check_channel(channel: object) -> None:
    if not is_channel_name(channel):
        # The frame's own value goes back as `channel`, so a client can tell which of
        # its requests was refused; a value no frame could carry back is left out.
        echo = {"channel": channel} if _sendable(channel) else {}
        raise FrameError(
            INVALID_CHANNEL,
            f"'channel' must be a channel name (letters, digits and _.:@-, at most 128, "
            f"nothing ending in ':'); got {_show(channel)}",
            **echo,
        )


def _sendable(value: object) -> bool:
    """Whether a client's scalar can be sent back as it is (a string of Unicode text, a
    finite number, a boolean)."""
    if isinstance(value, str):
        return _is_unicode(value)
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


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


def message_tail(
    sender: str | None,
    cls: str,
    priority: int,
    content: str,
    ts: float,
    *,
    channel: str,
    user: str | None,
) -> bytes:
    """Everything of a message frame after its id, encoded once at the sender."""
    body = _encoder.encode(
        {
            "channel": channel,
            "from": sender,
            "user": user,
            "class": cls,
            "priority": priority,
            "content": content,
            "ts": ts,
        }
    )
    return body[1:].encode()


_CLASS_FIELD = b',"class":"'
_PRIORITY_FIELD = b'","priority":'
_TS_FIELD = b',"ts":'


def read_message_frame(data: bytes) -> tuple[str, int, str, float] | None:
    """(id, priority, class, ts) of a message frame as `message_tail` and the broker
    build it, read by position instead of by a JSON parser (every message an instance
    receives from Redis passes here); None for anything else, which then goes to the
    parser. A `"` inside a JSON string is always escaped, so a field name found with
    its quotes is the field, not text in the channel, sender or content."""
    if not data.startswith(MESSAGE_HEAD) or not data.endswith(b"}"):
        return None
    id_end = data.find(b'"', len(MESSAGE_HEAD))
    class_at = data.find(_CLASS_FIELD, id_end)
    priority_at = data.find(_PRIORITY_FIELD, class_at)
    ts_at = data.rfind(_TS_FIELD)
    if id_end < 0 or class_at < 0 or priority_at < 0 or ts_at < priority_at:
        return None
    priority_from = priority_at + len(_PRIORITY_FIELD)
    try:
        priority = int(data[priority_from : data.index(b",", priority_from)])
        ts = float(data[ts_at + len(_TS_FIELD) : -1])
        return (
            data[len(MESSAGE_HEAD) : id_end].decode(),
            priority,
            data[class_at + len(_CLASS_FIELD) : priority_at].decode(),
            ts,
        )
    except ValueError:  # UnicodeDecodeError included
        return None


def message_payload(message_id: str, tail: bytes, history: bool = False) -> bytes:
    head = HISTORY_HEAD if history else MESSAGE_HEAD
    return b"".join((head, message_id.encode(), b'",', tail))


# Presence events travel on a channel's pub/sub among its messages, so they keep their
# order; they are told apart by their first byte: "P", the origin connection ("who is
# joining", so that it is not told about itself), a space, then the frame's JSON.
EVENT_MARK = b"P"


def presence_frame(kind: str, channel: str, client_id: str, user: str) -> bytes:
    """The JSON of a `join` or `leave` frame."""
    return encode({"type": kind, "channel": channel, "client_id": client_id, "user": user})


def event_payload(origin: str, frame_json: bytes) -> bytes:
    return EVENT_MARK + origin.encode() + b" " + frame_json


def split_event(payload: bytes) -> tuple[str, bytes] | None:
    """(origin, frame JSON) of an event payload; None if it is not one."""
    if not payload.startswith(EVENT_MARK):
        return None
    origin, sep, frame = payload[1:].partition(b" ")
    return (origin.decode(errors="replace"), frame) if sep else None
