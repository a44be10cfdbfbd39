"""The backend API under /api/: the app's backend publishes, asks who is present, reads
history, and disconnects users. Every instance answers, and what it does reaches every
instance's clients (through Redis).

Every request carries `Authorization: Bearer KEY` with a key of `api.keys`; with
`api.enabled: false` every /api/ path is 404. Answers and errors are JSON: 401
`{"error": "unauthorized"}`, 400 `{"error": ..., "field": ...}` (`field` is `body` when the
body is not a JSON object).
"""

from __future__ import annotations

import hmac
import json
import time

from core.wire import frames
from core.wire.channels import is_channel_name
from handlers.json_http import BadRequest, JsonHandler


class ApiHandler(JsonHandler):
    """The shared part: the API switch and the key."""

    def prepare(self) -> None:
        api = self.server.settings.api
        if not api.enabled:
            self.answer(404, {"error": "not found"})
            return
        given = self.request.headers.get("Authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(key.encode(), k.encode()) for k in api.keys
        ):
            self.answer(401, {"error": "unauthorized"})

    def channel(self, name: object, need: str | None = None) -> str:
        """A channel the API may use: a valid name in a listed namespace (with `need`,
        an option its namespace must have: "presence")."""
        rules = self.server.dispatcher.rules
        if not is_channel_name(name):
            raise BadRequest("channel", "'channel' must be a channel name")
        options = rules.namespace(name)
        if options is None:
            raise BadRequest("channel", f"no such namespace: '{rules.namespace_name(name)}'")
        if need is not None and not getattr(options, need):
            raise BadRequest("channel", f"this channel has no {need}")
        return name


class PublishHandler(ApiHandler):
    """`POST /api/publish` `{"channel", "class", "content"}` -> `{"id"}`: a message to the
    channel's subscribers on every instance, from nobody (`from` and `user` null). The
    API may publish where clients may not (`publish: none`)."""

    async def post(self) -> None:
        data = self.body()
        channel = self.channel(data.get("channel"))
        classes = self.server.dispatcher.classes
        cls = self.string(data, "class")
        if cls not in classes:
            raise BadRequest("class", f"'class' must be one of: {', '.join(classes)}")
        content = data.get("content")
        if not isinstance(content, str):
            raise BadRequest("content", "'content' must be a string")
        if len(content.encode(errors="replace")) > self.server.settings.server.max_message_size:
            raise BadRequest("content", "'content' is larger than max_message_size")
        try:
            content.encode()
        except UnicodeEncodeError:
            raise BadRequest("content", "'content' must be Unicode text") from None
        priority = classes[cls]
        ts = time.time()
        tail = frames.message_tail(None, cls, priority, content, ts, channel=channel, user=None)
        dispatcher = self.server.dispatcher
        dispatcher.metrics.published(dispatcher.rules.namespace_name(channel)).inc()
        message_id = await self.server.hub.publish(channel, priority, tail, ts, cls)
        self.answer(200, {"id": message_id})


class PresenceHandler(ApiHandler):
    """`GET /api/presence?channel=C` -> every connection present in C, on every instance."""

    async def get(self) -> None:
        channel = self.channel(self.get_query_argument("channel", None), need="presence")
        members = await self.server.presence.members(channel)
        clients = [{**m.public(), "instance": m.instance} for m in members]
        self.answer(200, {"channel": channel, "clients": clients})


class HistoryHandler(ApiHandler):
    """`GET /api/history?channel=C&limit=N` -> C's latest N message frames, oldest first."""

    async def get(self) -> None:
        channel = self.channel(self.get_query_argument("channel", None))
        raw = self.get_query_argument("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
            raise BadRequest("limit", "'limit' must be a number from 1 to 10000")
        history = self.server.services.history.value
        if history is None:
            raise BadRequest("channel", "history is off (plugins.history)")
        entries = await history.latest(channel, int(raw))
        messages = [json.loads(entry.payload) for entry in entries]
        self.answer(200, {"channel": channel, "messages": messages})


class DisconnectHandler(ApiHandler):
    """`POST /api/disconnect` `{"user": U}` -> every connection of U, on every instance,
    gets `forbidden` and close 1008; `{"disconnected": n}` counts this instance's."""

    async def post(self) -> None:
        user = self.string(self.body(), "user")
        closed = self.server.disconnect(user)
        self.answer(200, {"disconnected": closed})


class NotFoundHandler(ApiHandler):
    """Any other /api/ path (once the key is checked: 404 either way)."""

    def get(self) -> None:
        self.answer(404, {"error": "not found"})

    post = put = delete = patch = get
