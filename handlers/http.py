"""Plain HTTP endpoints: the browser client, health and metrics."""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web

from core.ops.metrics import CONTENT_TYPE

# The client loads only its own script and style, and talks only to this server:
# `connect-src 'self'` covers its WebSocket (CSP Level 3: 'self' matches ws: and wss: on
# the page's own host and port), and nothing else. `ws: wss:` here would let a script
# injected into the page send what it reads to any host.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


access_log = logging.getLogger("http")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """One line per request worth knowing, without the query string: `?session=` holds
    a secret token, which must never reach a log."""
    status = handler.get_status()
    if status < 400:
        level = logging.DEBUG
    elif status < 500:
        level = logging.WARNING
    else:
        level = logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(
            level,
            "%d %s %s (%s) %.1fms",
            status,
            request.method,
            request.path,
            request.remote_ip,
            1000.0 * request.request_time(),
        )


class IndexHandler(tornado.web.RequestHandler):
    """`/`: the browser client, with a strict Content-Security-Policy."""

    def initialize(self, path: str) -> None:
        self.path = path

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")
        with open(self.path, "rb") as f:
            self.write(f.read())

    def head(self) -> None:
        # GET's status and headers (Content-Length included); Tornado drops the body.
        self.get()


class StaticHandler(tornado.web.StaticFileHandler):
    """`/static/...`: the client's script and style."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")


class HealthHandler(tornado.web.RequestHandler):
    """`/healthz`: 200 while the instance can serve, 503 while it drains."""

    def initialize(self, server: Any) -> None:
        self.server = server

    def get(self) -> None:
        health = self.server.health()
        self.set_status(503 if health["status"] == "draining" else 200)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(health))

    def head(self) -> None:
        # A load balancer's cheap probe: the status and headers of GET, no body.
        self.get()


class MetricsHandler(tornado.web.RequestHandler):
    """`/metrics`: Prometheus text format."""

    def initialize(self, server: Any) -> None:
        self.server = server

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.write(self.server.metrics.render())
