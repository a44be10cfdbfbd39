"""JSON over HTTP: the answers and errors every JSON endpoint shares (the backend API,
the dev token endpoint)."""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web
from tornado.httputil import responses

log = logging.getLogger("http")


class BadRequest(Exception):
    """A request the endpoint cannot take: 400 with the offending field."""

    def __init__(self, field: str, error: str) -> None:
        super().__init__(error)
        self.field = field
        self.error = error


class JsonHandler(tornado.web.RequestHandler):
    """JSON in and out: `answer`, 400 `{"error", "field"}` for a BadRequest, JSON for
    every other error too."""

    def initialize(self, server: Any) -> None:
        self.server = server

    def answer(self, status: int, body: dict) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, BadRequest):
            self.answer(400, {"error": error.error, "field": error.field})
        elif status_code == 405:
            self.answer(405, {"error": "method not allowed"})
        else:
            self.answer(status_code, {"error": responses.get(status_code, "error").lower()})

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (BadRequest, tornado.web.HTTPError)):
            return  # answered; not an error of the server
        log.error("error on %s", self.request.path, exc_info=(typ, value, tb))

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"null")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise BadRequest("body", "the body must be a JSON object")
        return data

    @staticmethod
    def string(data: dict, field: str) -> str:
        value = data.get(field)
        if not isinstance(value, str) or not value:
            raise BadRequest(field, f"'{field}' must be a non-empty string")
        return value
