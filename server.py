#!/usr/bin/env python3
"""Run the real-time messaging server: one instance, or N workers sharing the port.

    python server.py --config config.yaml [--host H] [--port N] [--instance-id ID]
                     [--redis-url URL] [--workers N]

Flags override the file. A configuration mistake ends the process before it listens,
with exit status 2 and one line naming the file and the key. SIGTERM / SIGINT close
every client with 1001 and exit 0; SIGHUP reloads config.yaml. With `server.workers`
above 1 this process is the supervisor (relay/supervisor.py) of that many instances,
each started as `server.py --worker K`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys

from tornado.ioloop import PeriodicCallback

from core.config.loader import load_settings
from core.config.schema import ConfigError
from core.config.settings import Settings
from core.ops.logs import configure_logging
from core.stores.instance_claim import InstanceIdInUse
from plugins import REGISTRY
from relay import collector, event_loop
from relay.instance import Instance
from relay.supervisor import Supervisor, reserve_port

log = logging.getLogger("server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Real-time WebSocket messaging server on Tornado and Redis."
    )
    parser.add_argument("--config", required=True, metavar="PATH", help="config.yaml to load")
    parser.add_argument("--host", help="address to listen on (overrides server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    parser.add_argument("--instance-id", help="this instance's name (overrides server.instance_id)")
    parser.add_argument("--redis-url", help="Redis to use (overrides store.redis_url)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the port, each an instance (overrides server.workers)",
    )
    # Given by the supervisor to the processes it starts: this one is worker K.
    parser.add_argument("--worker", type=int, metavar="K", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        REGISTRY,
        {
            "server.host": args.host,
            "server.port": args.port,
            "server.instance_id": args.instance_id,
            "store.redis_url": args.redis_url,
            "server.workers": args.workers,
        },
    )


async def serve(settings: Settings, args: argparse.Namespace) -> int:
    instance = Instance(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Before starting, so that a SIGTERM while Redis is slow to answer still ends in an
    # orderly stop (and exit 0) instead of the default handler killing the process.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, log.warning, "SIGHUP while starting: no reload")
    starting = asyncio.ensure_future(instance.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        # Stopped before it listened (Redis slow to answer): give up starting, in time.
        # Cancel until it takes: a cancellation that lands inside the Redis client's
        # connection set-up can be absorbed by it.
        while not starting.done():
            starting.cancel()
            await asyncio.wait({starting}, timeout=0.05)
        await instance.abandon()
        log.info("signal received while starting: stopped")
        return 0
    stopping.cancel()
    try:
        starting.result()
    except InstanceIdInUse as error:
        await instance.abandon()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        log.error(
            "cannot listen on %s:%s: %s",
            settings.server.host,
            settings.server.port,
            error.strerror or error,
        )
        return 1
    collector.tune()  # once started: start-up's objects are never walked again
    reloads: set[asyncio.Task] = set()

    def on_sighup() -> None:
        task = asyncio.ensure_future(reload(instance, args))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    if instance.metrics.shared_dir is not None:
        # Workers share metrics through files: what one process would compute at scrape
        # time is written there every second.
        instance.metrics.refresh()
        PeriodicCallback(instance.metrics.refresh, 1000).start()
    await stop.wait()
    log.info("signal received: shutting down")
    await instance.stop()
    return 0


async def reload(instance: Instance, args: argparse.Namespace) -> None:
    """SIGHUP: read and validate the file again; refuse it whole if it is wrong."""
    try:
        settings = settings_from(args)
    except ConfigError as error:
        log.error("reload refused, the running configuration stays: %s", error)
        return
    configure_logging(settings.logging)
    try:
        changed = await instance.reload(settings)
    except Exception:
        log.exception("reload failed")
        return
    for key in changed:
        log.warning("reload: %s changed but takes effect only after a restart", key)


def supervise(settings: Settings, args: argparse.Namespace) -> int:
    """Run `server.workers` workers on one port until SIGTERM; the exit status."""
    server = settings.server
    try:
        reserved = reserve_port(server.host, server.port)
    except OSError as error:
        log.error("cannot listen on %s:%s: %s", server.host, server.port, error.strerror or error)
        return 1
    # Port 0 is chosen here, once: every worker gets the same port (and the default
    # instance id names it).
    port = reserved.getsockname()[1]
    base_id = dataclasses.replace(server, port=port).resolved_instance_id()
    log.info(
        "%d workers on %s:%d, instances %s/1 to %s/%d",
        server.workers,
        server.host,
        port,
        base_id,
        base_id,
        server.workers,
    )

    def command(number: int) -> list[str]:
        # The flags given to the supervisor, so that a worker's reload reads what it did.
        flags = {"--host": args.host, "--redis-url": args.redis_url, "--workers": args.workers}
        given = [
            str(x) for flag, value in flags.items() if value is not None for x in (flag, value)
        ]
        return [
            sys.executable,
            os.path.abspath(__file__),
            "--config", args.config,
            "--port", str(port),
            "--instance-id", f"{base_id}/{number}",
            "--worker", str(number),
            *given,
        ]  # fmt: skip

    supervisor = Supervisor(command, server.workers, stop_timeout=server.shutdown_timeout)
    try:
        return asyncio.run(supervisor.run())
    finally:
        reserved.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plugin of the user's own (`module:ClassName` in the file) may sit beside it;
    # appended, so it can never shadow an installed module.
    sys.path.append(os.path.dirname(os.path.abspath(args.config)))
    try:
        settings = settings_from(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.logging)
    try:
        loop = event_loop.resolve(settings.server.event_loop)
    except event_loop.LoopUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if settings.server.workers > 1 and args.worker is None:
            return supervise(settings, args)
        return event_loop.run(serve(settings, args), loop)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
