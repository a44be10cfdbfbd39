"""Dynamic heartbeats: one server-wide PeriodicCallback whose interval follows the load.

The interval is that of the first tier whose `max_clients` is at least the number of
connected clients (a tier without `max_clients` takes all). Each tick sends every client
a `heartbeat` frame and a WebSocket ping with a new random payload, and `timeout` seconds
later drops the clients that have not answered that ping (a close frame with 1011,
"heartbeat timeout", then the TCP connection is closed without waiting for an answer).
Only a pong that echoes the latest ping counts: a client that does not read cannot stay
by sending pongs of its own. When the tier changes,
the callback is rescheduled and the clients are told the new interval at once (a
heartbeat frame without a ping, at most once a second).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

from core.config.schema import ConfigError, join, setting
from core.engine.connection import SYSTEM_PRIORITY, Connection
from core.engine.hooks import Plugin
from core.wire import frames


@dataclass(frozen=True)
class Tier:
    """One load tier: up to `max_clients` clients (no limit if absent), this interval."""

    interval: float = setting(gt=0)
    max_clients: int | None = setting(None, ge=0)


DEFAULT_TIERS = (Tier(5.0, 1), Tier(15.0, 2), Tier(30.0))
ANNOUNCE_GAP = 1.0  # seconds between out-of-turn heartbeat frames after tier changes


@dataclass(frozen=True)
class HeartbeatSettings:
    """`plugins.heartbeat`."""

    enabled: bool = True
    timeout: float = setting(10.0, gt=0)
    tiers: tuple[Tier, ...] = setting(DEFAULT_TIERS, non_empty=True)

    def check(self, path: str) -> None:
        previous = -1
        for i, tier in enumerate(self.tiers):
            where = join(join(path, "tiers"), i)
            if tier.max_clients is None:
                if i != len(self.tiers) - 1:
                    raise ConfigError(
                        join(where, "max_clients"),
                        "only the last tier may leave out max_clients",
                    )
            elif tier.max_clients <= previous:
                raise ConfigError(
                    join(where, "max_clients"),
                    f"tiers must be in increasing max_clients order, got {tier.max_clients} "
                    f"after {previous}",
                )
            else:
                previous = tier.max_clients


def choose_interval(tiers: tuple[Tier, ...] | list[Tier], clients: int) -> float:
    """The interval of the first tier that holds `clients`; the last tier past all."""
    for tier in tiers:
        if tier.max_clients is None or clients <= tier.max_clients:
            return tier.interval
    return tiers[-1].interval


def tick_now_on_change(last_tick: float, now: float, new_interval: float) -> bool:
    """Whether a tier change should tick at once: the new interval has already passed
    since the last tick (otherwise restarting the timer could postpone ticks forever
    while clients come and go across a tier boundary)."""
    return now - last_tick >= new_interval


class HeartbeatPlugin(Plugin):
    """Pings every client on a load-dependent interval and closes the silent ones."""

    name = "heartbeat"
    Settings = HeartbeatSettings

    def __init__(self, settings: HeartbeatSettings, services) -> None:
        super().__init__(settings, services)
        self.interval = choose_interval(settings.tiers, 0)
        self._callback: PeriodicCallback | None = None
        self._last_tick = services.clock()
        self._last_announce = float("-inf")
        self._checks: set[asyncio.TimerHandle] = set()
        # When each connection last answered a ping (or opened); connections open
        # before the plugin started count from its start.
        self._answered: dict[Connection, float] = {}
        self._started_at = services.clock()
        self._ping = b""  # the latest ping's payload; only its echo counts

    async def on_startup(self) -> None:
        """Start the one server-wide callback."""
        self._started_at = self.services.clock()
        self._retier(len(self.services.hub), force=True)

    def on_connect(self, conn: Connection) -> None:
        """Tell the client the interval, re-tier for one more client."""
        # The connection joins the hub after admission, so count it here.
        self._retier(len(self.services.hub) + 1)
        conn.welcome["heartbeat"] = {"interval": self.interval}
        self._answered[conn] = self.services.clock()

    def on_pong(self, conn: Connection, data: bytes) -> None:
        """The client is alive if this answers the latest ping."""
        if data == self._ping:
            self._answered[conn] = self.services.clock()

    def on_close(self, conn: Connection) -> None:
        """Re-tier for one client fewer."""
        self._answered.pop(conn, None)
        self._retier(len(self.services.hub))

    async def on_shutdown(self) -> None:
        """Stop ticking and forget pending checks."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        for handle in self._checks:
            handle.cancel()
        self._checks.clear()

    def on_reload(self, settings: HeartbeatSettings) -> None:
        """New tiers or timeout apply from the next tick."""
        self.settings = settings
        self._retier(len(self.services.hub), force=True)

    def _retier(self, clients: int, force: bool = False) -> None:
        interval = choose_interval(self.settings.tiers, clients)
        if interval == self.interval and not force and self._callback is not None:
            return
        self.interval = interval
        self.services.metrics.heartbeat_interval.set(interval)
        if self._callback is not None:
            self._callback.stop()
        self._callback = PeriodicCallback(self._tick, interval * 1000)
        if not force:
            if tick_now_on_change(self._last_tick, self.services.clock(), interval):
                self._tick(clients)
            else:
                self._announce(clients)
        self._callback.start()

    def _frame(self, clients: int) -> bytes:
        return frames.json_frame(
            {
                "type": "heartbeat",
                "interval": self.interval,
                "clients": clients,
                "ts": self.services.wall(),
            }
        )

    def _announce(self, clients: int) -> None:
        """Tell clients a new interval now, not at the next tick (a client watching for
        silence needs it); at most once per ANNOUNCE_GAP so churn cannot flood them."""
        now = self.services.clock()
        if now - self._last_announce >= ANNOUNCE_GAP:
            self._last_announce = now
            self.services.hub.send_to_all(self._frame(clients), SYSTEM_PRIORITY)

    def _tick(self, clients: int | None = None) -> None:
        hub = self.services.hub
        now = self._last_tick = self.services.clock()
        frame = self._frame(len(hub) if clients is None else clients)
        self._ping = secrets.token_bytes(8)
        if hub.send_to_all(frame + frames.ping_frame(self._ping), SYSTEM_PRIORITY):
            loop = asyncio.get_running_loop()
            handle = loop.call_later(self.settings.timeout, self._check, now)
            self._checks.add(handle)

    def _check(self, pinged_at: float) -> None:
        """Close the clients that have not answered the ping sent at `pinged_at`."""
        now = asyncio.get_running_loop().time()
        self._checks = {h for h in self._checks if h.when() > now}
        answered = self._answered
        for conn in list(self.services.hub.connections()):
            if answered.get(conn, self._started_at) < pinged_at:
                self.services.metrics.heartbeat_timeouts.inc()
                self.log.info("dropping %s from %s: no pong", conn.client_id, conn.ip)
                conn.abort(frames.CLOSE_INTERNAL, "heartbeat timeout")
