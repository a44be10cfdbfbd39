"""deploy/nginx.conf in front of two instances: messages cross, IP limits hold through
the proxy, a drained instance's clients reconnect through nginx to the other, no log
nginx writes holds a secret from a query string, and /metrics answers only the host."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.ports import free_port
from tests.support.server_process import ROOT
from tests.support.timing import scaled
from tests.support.waiting import until
from tests.support.ws_client import Closed, WsClient

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def render(port: int, upstreams: tuple[int, int], workdir: Path) -> Path:
    """The shipped config with test ports and paths; every substitution must apply."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    substitutions = {
        "worker_processes auto;": "worker_processes 1;",  # one least_conn view: predictable
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8200": f"server 127.0.0.1:{upstreams[0]}",
        "server 127.0.0.1:8300": f"server 127.0.0.1:{upstreams[1]}",
        "pid /run/relay-nginx.pid;": f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;",
        # The shipped log directives keep their formats and levels: only their files move.
        "access_log /var/log/nginx/relay-access.log": f"access_log {workdir}/access.log",
        "error_log /var/log/nginx/relay-error.log": f"error_log {workdir}/error.log",
    }
    for old, new in substitutions.items():
        assert old in text, f"deploy/nginx.conf no longer contains {old!r}"
        text = text.replace(old, new)
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture
def nginx(tmp_path):
    def start(upstreams: tuple[int, int]) -> int:
        port = free_port()
        workdir = tmp_path / "nginx"
        workdir.mkdir()
        conf = render(port, upstreams, workdir)
        process = subprocess.Popen(
            [NGINX, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return port
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(process.stderr.read().decode()) from None
                time.sleep(0.05)

    started: list[subprocess.Popen] = []
    yield start
    for process in started:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(scaled(5))
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.gen_test(timeout=60)
async def test_two_instances_behind_nginx(processes, redis_server, key_prefix, nginx):
    config = merge(
        redis_changes(redis_server.url, key_prefix),
        {
            "server": {"trusted_proxies": ["127.0.0.1"]},
            "plugins": {"throttle": {"max_connections_per_ip": 2}},
        },
    )
    a, b = processes(config, "A"), processes(config, "B")
    port = nginx((a.port, b.port))

    # Clients from two addresses land on both instances; a message crosses once.
    x = await WsClient.connect(port, source="127.0.0.2")
    y = await WsClient.connect(port, source="127.0.0.3")
    assert {x.welcome["instance"], y.welcome["instance"]} == {"A", "B"}
    await x.send("normal", "through nginx")
    for client in (x, y):
        assert (await client.recv_type("message"))["content"] == "through nginx"
        await client.nothing_for(0.2)

    # The per-IP limit sees the real client behind the proxy, on both instances together,
    # and a forged X-Forwarded-For does not help.
    same_ip = [await WsClient.connect(port, source="127.0.0.4") for _ in range(2)]
    assert {c.welcome["instance"] for c in same_ip} == {"A", "B"}
    forged = await WsClient.connect(
        port, source="127.0.0.4", headers={"X-Forwarded-For": "198.51.100.1"}, wait_welcome=False
    )
    assert (await forged.recv())["code"] == "too_many_connections"

    # Draining A: its clients are told 1001 and come back through nginx, on B, resumed.
    on_a = x if x.welcome["instance"] == "A" else y
    a.signal(signal.SIGTERM)
    with pytest.raises(Closed):
        while True:
            await on_a.recv(5)
    assert on_a.close_code == 1001
    back = await WsClient.connect(port, source="127.0.0.9", session=on_a.session)
    assert back.welcome["instance"] == "B"
    assert back.welcome["resumed"] is True and back.client_id == on_a.client_id
    assert a.wait() == 0
    await asyncio.sleep(0)


# Variables that hold the query string, or a URL that may (another site's, with its own).
QUERY_VARIABLES = re.compile(
    r"\$(request|request_uri|args|query_string|is_args|arg_\w+|http_referer)\b"
)


def test_no_access_log_of_the_shipped_config_can_hold_a_query_string():
    """Every access_log names the `relay` format (an access_log without one would use
    `combined`, which has $request), and that format has no variable with the query."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    directives = re.findall(r"\baccess_log\s+([^;]*);", code)
    assert directives, "deploy/nginx.conf has no access_log"
    for args in directives:
        assert args == "off" or args.split()[1:2] == ["relay"], args
    formats = dict(re.findall(r"\blog_format\s+(\w+)\s+([^;]*);", code))
    assert "$uri" in formats["relay"]
    assert not QUERY_VARIABLES.search(formats["relay"]), formats["relay"]


async def http_request(
    port: int, target: str, *, method: str = "GET", source: str = "127.0.0.1"
) -> tuple[int, bytes]:
    """Status and body of one request sent exactly as written (no client tidies the
    target), from the local address `source`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    )
    response = await asyncio.wait_for(reader.read(), scaled(5))
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def websocket(port: int, query: str, source: str = "127.0.0.1") -> WsClient:
    """A WebSocket through nginx to /ws?<query>, once its handshake is done (welcome or not:
    what nginx logs does not depend on what the instance makes of the query)."""
    url = f"ws://127.0.0.1:{port}/ws?{query}"
    ws = await websocket_connect(
        HTTPRequest(url, connect_timeout=scaled(5), network_interface=source)
    )
    return WsClient(ws, url)


@pytest.mark.gen_test(timeout=60)
async def test_no_secret_from_a_query_string_reaches_nginx_logs(
    processes, redis_server, key_prefix, nginx, tmp_path
):
    config = redis_changes(redis_server.url, key_prefix)
    a, b = processes(config, "A"), processes(config, "B")
    instances = {"A": a, "B": b}
    port = nginx((a.port, b.port))
    access_log = tmp_path / "nginx" / "access.log"
    error_log = tmp_path / "nginx" / "error.log"
    jwt = f"eyJhbGciOiJIUzI1NiJ9.{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(32)}"
    unknown_session = secrets.token_urlsafe(32)
    failover_session = secrets.token_urlsafe(32)

    def logged() -> list[str]:
        return access_log.read_text().splitlines() if access_log.exists() else []

    # A session token as the client gets it, then resumed through nginx (y stays open).
    x = await WsClient.connect(port, source="127.0.0.2")
    session = x.session
    x.close()
    await until(lambda: len(logged()) == 1)
    y = await WsClient.connect(port, source="127.0.0.3", session=session)
    assert y.welcome["resumed"] is True and y.client_id == x.client_id
    z = await websocket(port, f"token={jwt}")
    w = await websocket(port, f"session={unknown_session}&token={jwt}")
    # Every location, each with a secret in its query string.
    requests = [
        ("GET", f"/?session={session}", "127.0.0.1", 200),
        ("HEAD", f"/?token={jwt}", "127.0.0.1", 200),
        ("GET", f"/static/app.js?session={session}", "127.0.0.1", 200),
        ("GET", f"/healthz?token={jwt}", "127.0.0.1", 200),
        ("GET", f"/metrics?session={session}", "127.0.0.1", 200),
        ("GET", f"/metrics?token={jwt}", "127.0.0.2", 403),
        ("GET", f"/nowhere?session={session}", "127.0.0.1", 404),
    ]
    for method, target, source, status in requests:
        assert (await http_request(port, target, method=method, source=source))[0] == status
    for client in (z, w):
        client.close()
    # nginx logs a WebSocket when it ends: all but y's so far.
    await until(lambda: len(logged()) == len(requests) + 3, timeout=10)

    # An instance gone: nginx tries it first (it has no connection, y's has one), fails
    # to connect, and passes the request to the other. That failure is an error, which
    # nginx would log with the whole request line.
    survivor = y.welcome["instance"]
    gone = instances["B" if survivor == "A" else "A"]
    gone.kill()
    v = await WsClient.connect(port, source="127.0.0.4", session=failover_session)
    assert v.welcome["instance"] == survivor
    v.close()
    y.close()
    lines = await until(lambda: len(logged()) == len(requests) + 5 and logged(), timeout=10)

    text = "\n".join(lines)
    errors = error_log.read_text() if error_log.exists() else ""
    for secret in (session, jwt, unknown_session, failover_session):
        assert secret not in text, text
        assert secret not in errors, errors
    assert "?" not in text and "session=" not in text and "token=" not in text, text
    # What the log is for is still there: each path, and the failover.
    for path in ["/ws", "/", "/static/app.js", "/healthz", "/metrics", "/nowhere"]:
        assert f" {path} HTTP/1.1" in text, path
    ports = f"127.0.0.1:{gone.port}, 127.0.0.1:{instances[survivor].port}"
    assert f"upstream={ports} status=502, 101" in text, text


@pytest.mark.gen_test(timeout=60)
async def test_metrics_through_nginx_answer_only_the_host(processes, nginx):
    a, b = processes(), processes()
    port = nginx((a.port, b.port))

    status, body = await http_request(port, "/metrics", source="127.0.0.1")
    assert status == 200 and b"ws_connections " in body

    # Any other address is refused, however the path is spelt: nginx matches the
    # location on the normalised path, which is also what the instance would serve.
    for target in [
        "/metrics",
        "/metrics?format=text",
        "//metrics",
        "/./metrics",
        "/static/../metrics",
        "/%6detrics",
        "http://127.0.0.1/metrics",
    ]:
        for method in ("GET", "HEAD"):
            status, body = await http_request(port, target, method=method, source="127.0.0.2")
            assert status == 403, (method, target, status)
            assert b"ws_" not in body, (method, target)
    # The rest of the site is open to that address.
    assert (await http_request(port, "/healthz", source="127.0.0.2"))[0] == 200
