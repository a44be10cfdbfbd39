"""`POST /auth/dev-token`: a token for whoever asks, so a demo can sign people in by name.

Off unless `plugins.auth.dev_tokens` is true (then every instance warns at start and on
reload): it lets anyone be anyone, which is what a demo wants and production must not
have. In production the app's backend mints tokens (docs/identity.md).

Body `{"user": NAME, "classes": [...], "channels": [...]}` (`classes` and `channels`
optional: the token's claims) -> `{"token", "user", "expires"}`. Browsers from other
origins than the page's and `server.allowed_origins` are refused (403).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from handlers.json_http import BadRequest, JsonHandler

USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class DevTokenHandler(JsonHandler):
    """Signs a token for the named user while `dev_tokens` is on; 404 otherwise."""

    def prepare(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is None or urlsplit(origin).netloc.lower() == self.request.host.lower():
            return  # not a browser, or the page's own origin
        if not self.server.origins.allows(origin):
            self.answer(403, {"error": "forbidden"})

    def post(self) -> None:
        auth = self.auth()
        if auth is None:
            self.answer(404, {"error": "not found"})
            return
        data = self.body()
        user = data.get("user")
        if not isinstance(user, str) or not USER.fullmatch(user):
            raise BadRequest("user", "'user' must be 1-64 letters, digits, '_', '.' or '-'")
        issued = auth.dev_token(user, strings(data, "channels"), strings(data, "classes") or [])
        if issued is None:  # switched off by a reload since auth() looked
            self.answer(404, {"error": "not found"})
            return
        token, expires = issued
        self.answer(200, {"token": token, "user": user, "expires": expires})

    def get(self) -> None:
        """Whether the endpoint is on: 200 `{"dev_tokens": true}` or 404 (the page asks
        before it offers to sign in by name)."""
        if self.auth() is None:
            self.answer(404, {"error": "not found"})
        else:
            self.answer(200, {"dev_tokens": True})

    def auth(self):
        """The auth plugin, if it is on and hands out dev tokens."""
        auth = self.server.plugins.get("auth")
        settings = getattr(auth, "settings", None)
        return auth if getattr(settings, "dev_tokens", False) else None


def strings(data: dict, field: str) -> list[str] | None:
    value = data.get(field)
    if value is None:
        return None
    if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        raise BadRequest(field, f"'{field}' must be a list of non-empty strings")
    return value
