"""One ordered message as it goes out: its id, priority and WebSocket frame, built once."""

from __future__ import annotations

from core.wire.frames import SYSTEM_PRIORITY, message_payload, text_frame
from core.wire.ids import parse_id


class Entry:
    """One ordered message: its id, priority and WebSocket frame, built once.

    Only the frame is kept (the JSON payload is a view into it), so a message held by
    the history log and by slow clients' queues costs its size once.
    """

    __slots__ = (
        "_history",
        "_start",
        "channel",
        "cls",
        "frame",
        "id",
        "key",
        "origin",
        "priority",
        "ts",
    )

    def __init__(
        self,
        id: str,
        priority: int,
        payload: bytes,
        ts: float = 0.0,
        cls: str = "",
        *,
        key: tuple[int, int] | None = None,
        channel: str = "",
        origin: str | None = None,
    ) -> None:
        self.id = id
        self.channel = channel
        # For a presence event: the connection it is about, which is not sent it.
        self.origin = origin
        self.priority = priority
        self.frame = text_frame(payload)
        self._start = len(self.frame) - len(payload)
        self.ts = ts  # wall-clock seconds when the sender's instance received it
        self.cls = cls  # the message class, for per-class metrics
        self.key = key if key is not None or origin is not None else parse_id(id)
        self._history: bytes | None = None

    def __repr__(self) -> str:
        return f"<Entry {self.id} p={self.priority}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and (self.id, self.frame) == (other.id, other.frame)

    __hash__ = None  # type: ignore[assignment]

    @property
    def payload(self) -> bytes:
        """The frame's JSON (a copy: needed only for replays)."""
        return self.frame[self._start :]

    @classmethod
    def from_tail(
        cls,
        message_id: str,
        priority: int,
        tail: bytes,
        ts: float,
        *,
        kind: str = "",
        channel: str = "",
    ) -> Entry:
        payload = message_payload(message_id, tail)
        return cls(message_id, priority, payload, ts, kind, channel=channel)

    @classmethod
    def event(cls, channel: str, origin: str, frame_json: bytes) -> Entry:
        """A presence event (join, leave): no id, no place in history."""
        return cls("", SYSTEM_PRIORITY, frame_json, channel=channel, origin=origin, key=None)

    def history_frame(self) -> bytes:
        """The same message marked `"history": true`, for a replay: built once, then
        shared by every connection it is replayed to."""
        if self._history is None:
            body = memoryview(self.frame)[self._start + 1 :]
            self._history = text_frame(b'{"history":true,' + body)
        return self._history
