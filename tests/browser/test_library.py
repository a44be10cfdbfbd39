"""relay.js, the browser client library, on its own: a page that imports it (and nothing
else of the client) in a real Chromium, against `server.py` processes.

The page is the server's own index.html with its script (app.js) held back, so relay.js
loads from /static/relay.js as an app's page would load it, under the page's
Content-Security-Policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import pytest

from tests.browser.harness import DESKTOP, skip_reason, wait_for
from tests.browser.test_channels import CHANNELS
from tests.support.config import merge

if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

# Loads the module, makes a client, records what it hands the app, and connects.
START = """async ([url, options]) => {
    const {RelayClient} = await import("/static/relay.js");
    const client = new RelayClient(url, options);
    window.client = client;
    window.got = [];
    window.states = [];
    window.welcomes = [];
    client.on("message", (frame) => got.push(frame));
    client.on("state", (state) => states.push(state));
    client.on("welcome", (frame) => welcomes.push(frame));
    return await client.connect();
}"""


class LibraryPage:
    """A tab whose script is relay.js alone, driven through `evaluate`."""

    def __init__(self, page, server) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        self.sent: list[list[dict]] = []  # frames the page sent, one list per socket
        self.received: list[list[dict]] = []  # and those it received
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, socket) -> None:
        sent: list[dict] = []
        received: list[dict] = []
        self.sent.append(sent)
        self.received.append(received)
        socket.on("framesent", lambda payload: sent.append(json.loads(payload)))
        socket.on("framereceived", lambda payload: received.append(json.loads(payload)))

    def start(self, **options) -> dict:
        base = f"http://127.0.0.1:{self.server.port}"
        self.page.route(base + "/static/app.js", lambda route: route.abort())
        self.page.goto(base + "/")
        url = f"ws://127.0.0.1:{self.server.port}/ws"
        return self.page.evaluate(START, [url, options])

    def run(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def subscribe(self, channel: str) -> dict:
        return self.run("(channel) => client.subscribe(channel)", channel)

    def publish(self, content: str, channel: str | None = None) -> None:
        self.run(
            "([content, channel]) => { client.publish(content, channel ? {channel} : {}); }",
            [content, channel],
        )

    def contents(self, channel: str | None = None) -> list[str]:
        return self.run(
            "(channel) => got.filter((f) => !channel || f.channel === channel)"
            ".map((f) => f.content)",
            channel,
        )

    def wait_for_message(self, content: str) -> None:
        wait_for(
            lambda: content in self.contents(),
            page=self.page,
            what=f"{content!r} to arrive",
        )


@pytest.fixture
def library(browser) -> Iterator[Callable[..., LibraryPage]]:
    contexts = []
    pages: list[LibraryPage] = []

    def open_page(server) -> LibraryPage:
        context = browser.new_context(viewport=DESKTOP)
        contexts.append(context)
        page = LibraryPage(context.new_page(), server)
        pages.append(page)
        return page

    yield open_page
    try:
        for page in pages:
            assert page.errors == [], page.errors
    finally:
        for context in contexts:
            context.close()


@pytest.mark.parametrize("how", ["graceful", "crash"])
def test_the_library_reconnects_resumes_and_delivers_each_message_once(
    how, processes, library, own_redis, key_prefix
):
    """Alice's instance restarts (SIGTERM, or SIGKILL) while Bob, on another instance,
    writes: Alice's client comes back by itself, in the same session and the same room,
    with what she missed, and gives her app each message once."""
    store = {"store": {"backend": "redis", "redis_url": own_redis.url, "key_prefix": key_prefix}}
    # History replays enough that a replay overlapping what was seen would show.
    config = merge(merge(CHANNELS, store), {"plugins": {"history": {"replay": 10}}})
    left = processes(config)
    right = processes(config)
    alice = library(left)
    bob = library(right)
    welcome = alice.start(backoffBase=200)
    bob.start()
    assert welcome["resumed"] is False
    subscribed = alice.subscribe("room:lobby")
    assert subscribed["type"] == "subscribed" and subscribed["channel"] == "room:lobby"
    bob.subscribe("room:lobby")

    alice.publish("one", "room:lobby")
    bob.wait_for_message("one")
    bob.publish("two", "room:lobby")
    bob.publish("hello everyone")
    for text in ("one", "two", "hello everyone"):
        alice.wait_for_message(text)

    if how == "graceful":
        assert left.stop() == 0
    else:
        left.kill()
    wait_for(lambda: "closed" in alice.run("() => states"), page=alice.page, what="the drop")
    bob.publish("missed in the room", "room:lobby")
    bob.publish("missed by everyone")
    bob.wait_for_message("missed by everyone")
    left.start()

    wait_for(
        lambda: alice.run("() => welcomes.length") == 2,
        page=alice.page,
        timeout=20,
        what="alice's client to reconnect by itself",
    )
    again = alice.run("() => welcomes[1]")
    assert again["resumed"] is True
    assert again["client_id"] == welcome["client_id"]
    alice.wait_for_message("missed in the room")
    alice.wait_for_message("missed by everyone")
    assert alice.run("() => client.state") == "open"
    states = alice.run("() => states")
    assert states[:2] == ["connecting", "open"] and states[-2:] == ["connecting", "open"], states
    if how == "crash":
        # A crashed server kept nothing of the room: the client joined it again,
        # recovering from the last message it had there.
        resubscribe = [f for f in alice.sent[-1] if f.get("type") == "subscribe"]
        last_two = alice.run("() => got.find((f) => f.content === 'two').id")
        assert resubscribe == [{"type": "subscribe", "channel": "room:lobby", "since": last_two}]

    # The room still works both ways on the restarted instance.
    alice.publish("three", "room:lobby")
    bob.wait_for_message("three")
    alice.wait_for_message("three")
    bob.publish("four", "room:lobby")
    alice.wait_for_message("four")
    assert alice.contents("room:lobby") == ["one", "two", "missed in the room", "three", "four"]
    assert alice.contents("broadcast") == ["hello everyone", "missed by everyone"]
    replayed = alice.run("() => got.filter((f) => f.history).map((f) => f.content)")
    assert sorted(replayed) == ["missed by everyone", "missed in the room"]


def test_a_replay_that_overlaps_what_was_delivered_is_not_delivered_again(
    processes, library, own_redis, key_prefix
):
    """A session keeps each channel's place as of its last goodbye: after a resume, an
    instance that crashes says no goodbye, so the next resume replays from the older
    place what the client had already been given live. relay.js hands its app each
    message once all the same."""
    store = {"store": {"backend": "redis", "redis_url": own_redis.url, "key_prefix": key_prefix}}
    config = merge(CHANNELS, store)
    left = processes(config)
    right = processes(config)
    alice = library(left)
    bob = library(right)
    alice.start(backoffBase=200)
    bob.start()
    alice.subscribe("room:lobby")
    bob.subscribe("room:lobby")
    bob.publish("m1", "room:lobby")
    alice.wait_for_message("m1")

    assert left.stop() == 0  # a goodbye: the session keeps m1 as alice's place
    left.start()
    wait_for(lambda: alice.run("() => welcomes.length") == 2, page=alice.page, timeout=20)
    bob.publish("m2", "room:lobby")
    bob.publish("m3", "room:lobby")
    alice.wait_for_message("m3")
    left.kill()  # no goodbye: the session still says m1
    left.start()
    wait_for(lambda: alice.run("() => welcomes.length") == 3, page=alice.page, timeout=20)
    bob.publish("m4", "room:lobby")
    alice.wait_for_message("m4")

    replayed = [f["content"] for f in alice.received[-1] if f.get("history")]
    assert replayed == ["m2", "m3"]  # the server sent them again...
    assert alice.contents("room:lobby") == ["m1", "m2", "m3", "m4"]  # ...the app got them once


def test_a_silent_connection_is_given_up_and_replaced(processes, library):
    """The browser answers pings without telling the page, so relay.js watches for the
    server's heartbeat frames: when they stop (a half-open connection, played here by a
    route that stops passing the server's frames on), it connects again by itself."""
    server = processes({"plugins": {"heartbeat": {"tiers": [{"interval": 1}]}}})
    page = library(server)
    passing = {"on": True}

    def route(ws) -> None:
        upstream = ws.connect_to_server()
        upstream.on_message(lambda message: ws.send(message) if passing["on"] else None)

    page.page.route_web_socket(re.compile(r"/ws"), route)
    welcome = page.start(minSilence=1000)
    assert welcome["heartbeat"]["interval"] == 1
    passing["on"] = False  # from now on the connection says nothing
    wait_for(lambda: "closed" in page.run("() => states"), page=page.page, timeout=15)
    passing["on"] = True
    wait_for(lambda: page.run("() => welcomes.length") == 2, page=page.page, timeout=15)
    assert page.run("() => welcomes[1].resumed") is True
