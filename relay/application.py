"""The HTTP routes of an instance: which handler answers which path."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import tornado.web

from handlers.api import (
    DisconnectHandler,
    HistoryHandler,
    NotFoundHandler,
    PresenceHandler,
    PublishHandler,
)
from handlers.dev_tokens import DevTokenHandler
from handlers.http import HealthHandler, IndexHandler, MetricsHandler, StaticHandler, log_request
from handlers.websocket import WebSocketHandler

if TYPE_CHECKING:
    from relay.instance import Instance

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def application(instance: Instance) -> tornado.web.Application:
    """The Tornado application serving `instance`."""
    return tornado.web.Application(
        [
            (r"/", IndexHandler, {"path": os.path.join(STATIC_DIR, "index.html")}),
            (r"/static/(.*)", StaticHandler, {"path": STATIC_DIR}),
            (r"/healthz", HealthHandler, {"server": instance}),
            (r"/metrics", MetricsHandler, {"server": instance}),
            (r"/ws", WebSocketHandler, {"server": instance}),
            (r"/api/publish", PublishHandler, {"server": instance}),
            (r"/api/presence", PresenceHandler, {"server": instance}),
            (r"/api/history", HistoryHandler, {"server": instance}),
            (r"/api/disconnect", DisconnectHandler, {"server": instance}),
            (r"/api/.*", NotFoundHandler, {"server": instance}),
            (r"/auth/dev-token", DevTokenHandler, {"server": instance}),
        ],
        websocket_max_message_size=instance.settings.server.max_message_size,
        compress_response=False,
        log_function=log_request,
    )
