"""Identity: the app's JWT on connect, and what it allows.

A client connects with `/ws?token=JWT` (the token is never logged: request lines are
logged without their query string). The token is verified with PyJWT: the configured
algorithms (HS* with `secret`, RS*/ES*/PS*/EdDSA with `public_key_file`), `exp` with a
small leeway, `aud` and `iss` when configured, `sub` required. Its `sub` becomes the
client's `user`: presence shows it, messages carry it, and the client is in its
personal channel `user:<sub>`. Optional claims narrow what it may do:

- `channels`: names or `prefix*` patterns the token may subscribe to, beyond the default
  channel and its own personal channel (without the claim: wherever namespaces allow);
- `classes`: the `restricted_classes` (critical by default) it may send.

No token, a bad one or an expired one: the WebSocket opens, the first frame is `error`
`unauthorized` (no welcome), then close 1008. With `anonymous: true`, a client without a
token is a guest (its user is its client_id; restricted classes refused), but a bad
token is still refused. A token expires on an open connection too: `unauthorized` and
close 1008 at `exp`, unless the client sent `{"type": "refresh", "token": ...}` (same
`sub`) before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import jwt

from core.config.schema import ConfigError, join, setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin, Veto
from core.engine.message import Message
from core.wire import frames

HMAC = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
)


@dataclass(frozen=True)
class AuthSettings:
    """`plugins.auth`."""

    enabled: bool = False
    algorithms: tuple[str, ...] = setting(["HS256"], non_empty=True)
    secret: str | None = None  # HS*: the shared secret (from the environment, please)
    public_key_file: str | None = None  # RS*/ES*/PS*/EdDSA: the issuer's public key, PEM
    audience: str | None = None
    issuer: str | None = None
    anonymous: bool = False
    restricted_classes: tuple[str, ...] = setting(["critical"])
    leeway: float = setting(5.0, ge=0, le=300)  # seconds of clock skew allowed on exp
    # For demos only: POST /auth/dev-token {"user": NAME} signs a token for anyone who asks.
    dev_tokens: bool = False
    dev_token_ttl: float = setting(3600.0, gt=0, le=86400)

    def check(self, path: str) -> None:
        for i, algorithm in enumerate(self.algorithms):
            if algorithm not in HMAC | PUBLIC_KEY:
                known = ", ".join(sorted(HMAC | PUBLIC_KEY))
                raise ConfigError(
                    join(join(path, "algorithms"), i), f"unknown algorithm (known: {known})"
                )
        if not self.enabled:
            return
        if HMAC & set(self.algorithms) and PUBLIC_KEY & set(self.algorithms):
            raise ConfigError(
                join(path, "algorithms"),
                "mix of HS* and public-key algorithms: a token could pick its own way to be "
                "checked",
            )
        if self.dev_tokens and not HMAC & set(self.algorithms):
            raise ConfigError(
                join(path, "dev_tokens"),
                "needs an HS* algorithm: the server signs dev tokens with the secret",
            )
        if HMAC & set(self.algorithms):
            if not self.secret:
                raise ConfigError(join(path, "secret"), "required for HS* algorithms")
            if len(self.secret.encode()) < 32:
                raise ConfigError(
                    join(path, "secret"), "must be at least 32 bytes (256 bits) for HS*"
                )
        else:
            self.public_key()

    def public_key(self) -> Any:
        """The verification key: the secret, or the public key file's key."""
        if not PUBLIC_KEY & set(self.algorithms):
            return self.secret
        path = "plugins.auth.public_key_file"
        if not self.public_key_file:
            raise ConfigError(path, "required for public-key algorithms")
        try:
            with open(self.public_key_file, "rb") as f:
                pem = f.read()
        except OSError as error:
            raise ConfigError(path, f"cannot read it: {error.strerror}") from None
        try:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            return load_pem_public_key(pem)
        except ValueError:
            raise ConfigError(path, "not a PEM public key") from None


@dataclass(frozen=True)
class Grant:
    """What a verified token allows one connection."""

    sub: str
    exp: float | None
    channels: tuple[str, ...] | None  # None: wherever namespaces allow
    classes: frozenset[str]


class AuthPlugin(Plugin):
    """Verifies each client's JWT; the token's `sub` is the client's user."""

    name = "auth"
    Settings = AuthSettings

    def __init__(self, settings: AuthSettings, services) -> None:
        super().__init__(settings, services)
        self._key = settings.public_key()
        self._grants: dict[Connection, Grant | None] = {}  # None: a guest
        self._expiries: dict[Connection, asyncio.TimerHandle] = {}
        self._warn_of_dev_tokens()

    def on_reload(self, settings: AuthSettings) -> None:
        """New keys and rules apply to new tokens (and refreshes)."""
        self.settings = settings
        self._key = settings.public_key()
        self._warn_of_dev_tokens()

    def _warn_of_dev_tokens(self) -> None:
        if self.settings.dev_tokens:
            self.log.warning(
                "plugins.auth.dev_tokens is on: anyone can sign in as anyone "
                "(POST /auth/dev-token); for demos only, never in production"
            )

    def dev_token(
        self, user: str, channels: list[str] | None, classes: list[str]
    ) -> tuple[str, float] | None:
        """A token for `user` and its expiry, signed as the app would (None unless
        `dev_tokens` is on)."""
        s = self.settings
        if not s.dev_tokens:
            return None
        exp = int(self.services.wall() + s.dev_token_ttl)
        claims: dict[str, Any] = {"sub": user, "exp": exp, "classes": classes}
        if channels is not None:
            claims["channels"] = channels
        if s.audience is not None:
            claims["aud"] = s.audience
        if s.issuer is not None:
            claims["iss"] = s.issuer
        algorithm = next(a for a in s.algorithms if a in HMAC)
        return jwt.encode(claims, s.secret, algorithm=algorithm), exp

    def verify(self, token: str) -> Grant:
        """The token's grant; jwt.InvalidTokenError if it is not a valid one."""
        s = self.settings
        claims = jwt.decode(
            token,
            self._key,
            algorithms=list(s.algorithms),
            audience=s.audience,
            issuer=s.issuer,
            leeway=s.leeway,
            options={"require": ["sub"], "verify_aud": s.audience is not None},
        )
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise jwt.InvalidTokenError("sub must be a non-empty string")
        channels = claims.get("channels")
        if channels is not None and not (
            isinstance(channels, list) and all(isinstance(c, str) for c in channels)
        ):
            raise jwt.InvalidTokenError("channels must be a list of strings")
        classes = claims.get("classes", [])
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise jwt.InvalidTokenError("classes must be a list of strings")
        exp = claims.get("exp")
        return Grant(
            sub,
            float(exp) if isinstance(exp, (int, float)) else None,
            tuple(channels) if channels is not None else None,
            frozenset(classes),
        )

    async def on_connect(self, conn: Connection) -> Veto | None:
        """Check the token of `?token=`; its `sub` becomes the client's user."""
        token = conn.query.get("token")
        if token is None:
            if self.settings.anonymous:
                self._grants[conn] = None  # a guest
                return None
            return unauthorized("a token is required (?token=JWT)")
        try:
            grant = self.verify(token)
        except jwt.InvalidTokenError as error:
            self.log.debug("refused a token from %s: %s", conn.ip, error)
            return unauthorized(f"the token is not valid: {error}")
        conn.user = grant.sub
        self._grants[conn] = grant
        self._expire_at(conn, grant)
        return None

    def _expire_at(self, conn: Connection, grant: Grant) -> None:
        old = self._expiries.pop(conn, None)
        if old is not None:
            old.cancel()
        if grant.exp is not None:
            loop = asyncio.get_running_loop()
            delay = grant.exp + self.settings.leeway - self.services.wall()
            self._expiries[conn] = loop.call_later(max(0.0, delay), self._expired, conn)

    def _expired(self, conn: Connection) -> None:
        self._expiries.pop(conn, None)
        if not conn.closing:
            conn.fail(frames.UNAUTHORIZED, "the token has expired", frames.CLOSE_POLICY)

    async def on_refresh(self, conn: Connection, token: str) -> Veto | None:
        """A new token for the same user, before the old one expires."""
        if conn not in self._grants:
            return None  # admitted before this plugin started: nothing to renew
        try:
            grant = self.verify(token)
        except jwt.InvalidTokenError as error:
            return Veto(frames.UNAUTHORIZED, f"the token is not valid: {error}")
        if grant.sub != conn.user:
            return Veto(frames.UNAUTHORIZED, "the token is for another user")
        self._grants[conn] = grant
        self._expire_at(conn, grant)
        return None

    def on_authorize(self, conn: Connection, channel: str) -> Veto | None:
        """The token's `channels` claim, if it has one, must cover the channel."""
        grant = self._grants.get(conn)
        if grant is None or grant.channels is None:
            return None
        if any(covers(pattern, channel) for pattern in grant.channels):
            return None
        return Veto(frames.FORBIDDEN, "the token does not allow this channel")

    def on_message(self, conn: Connection, message: Message) -> Veto | None:
        """A restricted class needs the token's `classes` claim to list it."""
        if message.cls not in self.settings.restricted_classes:
            return None
        grant = self._grants.get(conn)
        if grant is not None and message.cls in grant.classes:
            return None
        return Veto(frames.FORBIDDEN, f"your token does not allow '{message.cls}' messages")

    def on_close(self, conn: Connection) -> None:
        """Forget the connection's grant and its expiry."""
        self._grants.pop(conn, None)
        timer = self._expiries.pop(conn, None)
        if timer is not None:
            timer.cancel()

    async def on_shutdown(self) -> None:
        """No expiry fires after the plugin is gone."""
        for timer in self._expiries.values():
            timer.cancel()
        self._expiries.clear()


def covers(pattern: str, channel: str) -> bool:
    """A `channels` claim entry: a name, or a prefix ending in `*`."""
    if pattern.endswith("*"):
        return channel.startswith(pattern[:-1])
    return channel == pattern


def unauthorized(message: str) -> Veto:
    return Veto(frames.UNAUTHORIZED, message, frames.CLOSE_POLICY)
