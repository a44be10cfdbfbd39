"""The plain HTTP endpoints: HEAD answers like GET without a body, and the page's
Content-Security-Policy lets it talk to its own server only."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
import tornado.httpserver
import tornado.web

from handlers.http import HealthHandler
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, skip_reason, sync_playwright
from tests.support.timing import scaled

# Headers that may differ between two answers to the same request.
PER_RESPONSE = {"date"}


async def exchange(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, and everything the server sent until it closed
    it: status, headers, and the bytes after them (nothing at all for HEAD)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    )
    response = await asyncio.wait_for(reader.read(), scaled(5))
    writer.close()
    head, separator, rest = response.partition(b"\r\n\r\n")
    assert separator, response
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def same_headers(a: dict[str, str], b: dict[str, str]) -> bool:
    def keep(h: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in h.items() if k not in PER_RESPONSE}

    return keep(a) == keep(b)


@pytest.mark.gen_test(timeout=10)
async def test_head_of_the_page_answers_like_get_without_a_body(servers):
    server = await servers()
    status, get_headers, body = await exchange(server.port, "GET", "/")
    assert status == 200 and b"<html" in body.lower()
    status, head_headers, rest = await exchange(server.port, "HEAD", "/")
    assert status == 200
    assert rest == b""
    assert same_headers(head_headers, get_headers), (head_headers, get_headers)
    assert int(head_headers["content-length"]) == len(body)
    assert "content-security-policy" in head_headers


@pytest.mark.gen_test(timeout=10)
async def test_head_of_healthz_answers_like_get_without_a_body(servers):
    server = await servers()
    status, get_headers, body = await exchange(server.port, "GET", "/healthz")
    assert status == 200 and b'"status": "ok"' in body
    status, head_headers, rest = await exchange(server.port, "HEAD", "/healthz")
    assert status == 200
    assert rest == b""
    assert same_headers(head_headers, get_headers), (head_headers, get_headers)
    assert int(head_headers["content-length"]) == len(body)


class Draining:
    """An instance as /healthz sees it while it drains."""

    def health(self) -> dict:
        return {"status": "draining", "instance": "d", "connections": 0, "store": "memory"}


@pytest.mark.gen_test(timeout=10)
async def test_head_of_healthz_says_503_while_draining():
    app = tornado.web.Application([(r"/healthz", HealthHandler, {"server": Draining()})])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    http = tornado.httpserver.HTTPServer(app)
    http.add_sockets([listener])
    try:
        port = listener.getsockname()[1]
        get_status, _, body = await exchange(port, "GET", "/healthz")
        head_status, headers, rest = await exchange(port, "HEAD", "/healthz")
        assert get_status == head_status == 503
        assert rest == b"" and int(headers["content-length"]) == len(body)
    finally:
        http.stop()


def connect_src(policy: str) -> list[str]:
    directives = {}
    for directive in policy.split(";"):
        name, *values = directive.split()
        directives[name.lower()] = values
    return directives["connect-src"]


@pytest.mark.gen_test(timeout=10)
async def test_the_page_may_connect_to_its_own_server_only(servers):
    server = await servers()
    for method in ("GET", "HEAD"):
        _, headers, _ = await exchange(server.port, method, "/")
        policy = headers["content-security-policy"]
        # 'self' alone: the page's own scheme, host and port, and (CSP Level 3) ws:/wss:
        # to the same host and port. No scheme (ws:, wss:, https:), host or wildcard.
        assert connect_src(policy) == ["'self'"], policy
        assert not re.search(r"\b(ws|wss|http|https):|\*", policy), policy


@pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))
def test_chromium_blocks_a_websocket_to_another_host_from_the_page(processes):
    """What the header means in a browser: the page's own socket opens, a script's
    WebSocket to another host is refused by the policy before it connects."""
    server = processes()
    elsewhere = socket.socket()  # a server on another host: must never see a connection
    elsewhere.bind(("127.0.0.2", 0))
    elsewhere.listen(1)
    elsewhere.setblocking(False)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=scaled(30_000)
        )
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.wait_for_selector(
                "[data-testid=connection][data-state=open]", timeout=scaled(10_000)
            )
            violation = page.evaluate(
                """([url, ms]) => new Promise((resolve) => {
                    document.addEventListener("securitypolicyviolation", (e) =>
                        resolve({directive: e.effectiveDirective, blocked: e.blockedURI}));
                    setTimeout(() => resolve(null), ms);
                    try { new WebSocket(url); } catch (e) { /* the event still says why */ }
                })""",
                [f"ws://127.0.0.2:{elsewhere.getsockname()[1]}/ws", scaled(5_000)],
            )
        finally:
            browser.close()
    assert violation is not None, "no Content-Security-Policy violation"
    assert violation["directive"] == "connect-src"
    assert violation["blocked"].startswith("ws://127.0.0.2:")
    with pytest.raises(BlockingIOError):
        elsewhere.accept()
    elsewhere.close()
