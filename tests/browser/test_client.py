"""The browser client in a real Chromium against `server.py` processes.

Each test starts its own server process with the limits it needs and opens client tabs
in fresh browser contexts (so each tab has its own sessionStorage, like separate users).
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.harness import expect, skip_reason, wait_for

if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

FAST_HEARTBEAT = {"plugins": {"heartbeat": {"tiers": [{"interval": 1}]}}}


def test_two_pages_exchange_messages(processes, client_pages):
    server = processes(FAST_HEARTBEAT)
    alice = client_pages(server, viewport={"width": 960, "height": 560})
    bob = client_pages(server)
    assert alice.client_id() != bob.client_id()
    for page in (alice, bob):
        expect(page.testid("instance")).to_have_text(server.instance_id)
        expect(page.testid("session")).to_have_text("new")

    conversation = [
        (alice, "normal", "Is the deploy done?"),
        (bob, "critical", "Rolling back: error rate above 5% on eu-west"),
        (alice, "status", "alice is looking at the dashboards"),
    ]
    for sender, cls, text in conversation:
        sender.send(text, cls)
        # Wait for it everywhere before the next one, so the order is the sending order.
        for page in (alice, bob):
            expect(page.message(text)).to_have_count(1)

    texts = [text for _, _, text in conversation]
    for page in (alice, bob):
        assert page.contents() == texts
        rendered = page.messages
        for i, (sender, cls, _) in enumerate(conversation):
            expect(rendered.nth(i)).to_have_attribute("data-from", sender.client_id())
            expect(rendered.nth(i)).to_have_attribute("data-class", cls)
            expect(rendered.nth(i).locator("time")).to_have_text(re.compile(r"\d"))
        # Each page marks its own messages.
        expect(page.page.locator("#log li.msg.mine")).to_have_count(
            sum(1 for sender, _, _ in conversation if sender is page)
        )
    expect(alice.testid("message-input")).to_have_value("")
    expect(alice.testid("clients")).to_have_text("2")
    # (The README's picture, docs/client.png, is taken in test_channels.py.)


def test_fourth_page_of_one_address_is_refused_until_the_user_reconnects(processes, client_pages):
    server = processes({"plugins": {"throttle": {"max_connections_per_ip": 3}}})
    first, *_ = [client_pages(server) for _ in range(3)]
    fourth = client_pages(server, wait=False)

    expect(fourth.connection).to_have_attribute("data-state", "refused")
    expect(fourth.testid("state-reason")).to_contain_text("too many connections")
    expect(fourth.testid("error")).to_be_visible()
    expect(fourth.testid("error")).to_have_attribute("data-code", "too_many_connections")
    expect(fourth.testid("reconnect")).to_be_visible()
    # Longer than the first automatic retry could wait (at most 0.5 s): none comes.
    fourth.page.wait_for_timeout(1200)
    assert len(fourth.sockets) == 1
    expect(fourth.connection).to_have_attribute("data-state", "refused")

    first.page.close()
    wait_for(lambda: server.health()[1]["connections"] == 2, what="the server to see a tab go")
    fourth.testid("reconnect").click()
    fourth.wait_open()
    expect(fourth.testid("reconnect")).to_be_hidden()
    expect(fourth.testid("error")).to_be_hidden()
    assert len(fourth.sockets) == 2


def test_burst_is_rate_limited_with_a_live_countdown(processes, client_pages):
    server = processes({"plugins": {"ratelimit": {"max_messages_per_second": 5, "burst": 5}}})
    page = client_pages(server)
    # Record every value the countdown shows: it runs for a fifth of a second only.
    page.page.evaluate(
        """() => {
            const countdown = document.getElementById("rl-countdown");
            window.countdownShown = [];
            new MutationObserver(() => window.countdownShown.push(countdown.textContent))
                .observe(countdown, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.testid("burst").click()

    notice = page.testid("rate-limit")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Rate limited")
    expect(page.testid("rate-limit-detail")).to_contain_text("at most 5 per second")

    def settled() -> bool:
        dropped = int(notice.get_attribute("data-dropped") or 0)
        return dropped + page.messages.count() == 20

    wait_for(settled, page=page.page, what="all 20 burst messages sent or refused")
    accepted = page.messages.count()
    # Five tokens, plus at most one refilled while the burst was on its way.
    assert 5 <= accepted <= 6
    assert page.contents() == [f"burst {i}/20" for i in range(1, accepted + 1)]
    expect(page.testid("rate-limit-detail")).to_contain_text(f"{20 - accepted} messages were")

    expect(page.testid("rate-limit-countdown")).to_have_text("now")
    shown = page.page.evaluate("() => window.countdownShown")
    waits = [float(m.group(1)) for s in shown if (m := re.fullmatch(r"(\d+\.\d) s", s))]
    assert waits, shown
    assert 0 < max(waits) <= 1
    assert shown[-1] == "now"
    # The notice goes away by itself once sending is allowed again.
    expect(notice).to_be_hidden()


@pytest.mark.parametrize("how", ["graceful", "crash"])
def test_server_restart_resumes_the_session_without_duplicates(
    how, processes, client_pages, own_redis, key_prefix
):
    server = processes(
        {"store": {"backend": "redis", "redis_url": own_redis.url, "key_prefix": key_prefix}}
    )
    alice = client_pages(server)
    bob = client_pages(server)
    identities = {page: page.client_id() for page in (alice, bob)}

    before = ["before the restart 1", "before the restart 2"]
    for text in before:
        alice.send(text)
        for page in (alice, bob):
            expect(page.message(text)).to_have_count(1)
    last_id = bob.messages.last.get_attribute("data-id")

    if how == "graceful":
        assert server.stop() == 0
    else:
        server.kill()
    for page in (alice, bob):
        expect(page.connection).to_have_attribute(
            "data-state", re.compile("reconnecting|connecting")
        )
    server.start()

    for page in (alice, bob):
        page.wait_open()
        expect(page.testid("session")).to_have_text("resumed")
        expect(page.testid("client-id")).to_have_text(identities[page])
        expect(page.page.locator("#log li.system.good")).to_contain_text(["session resumed"])
        query = parse_qs(urlsplit(page.sockets[-1].url).query)
        assert query["since"] == [last_id]
        assert "session" in query

    alice.send("after the restart")
    for page in (alice, bob):
        expect(page.message("after the restart")).to_have_count(1)
        assert page.contents() == [*before, "after the restart"]
        # The server did not send the old messages again (the page would hide repeats).
        replayed = [
            frame["content"]
            for frames in page.frames[1:]
            for frame in frames
            if frame.get("type") == "message"
        ]
        assert replayed == ["after the restart"], server.log()


def test_a_tab_that_leaves_and_comes_back_gets_what_it_missed(processes, client_pages):
    server = processes()
    alice = client_pages(server)
    bob = client_pages(server)
    bob_id = bob.client_id()
    alice.send("seen by both")
    expect(bob.message("seen by both")).to_have_count(1)

    bob.page.goto("about:blank")
    wait_for(lambda: server.health()[1]["connections"] == 1, what="bob's tab to go")
    alice.send("sent while bob was away")
    expect(alice.message("sent while bob was away")).to_have_count(1)
    bob.open().wait_open()

    expect(bob.testid("session")).to_have_text("resumed")
    expect(bob.testid("client-id")).to_have_text(bob_id)
    expect(bob.message("sent while bob was away")).to_have_attribute("data-history", "true")
    expect(bob.message("sent while bob was away").locator(".tag")).to_have_text("history")
    assert bob.contents() == ["sent while bob was away"]


def test_message_content_is_text_not_markup(processes, client_pages):
    server = processes()
    # Without the CSP safety net, so that only the client's own rendering is on test.
    sender = client_pages(server, bypass_csp=True)
    reader = client_pages(server, bypass_csp=True)
    attacks = [
        "<img src=x onerror=alert(1)>",
        "<script>alert(2)</script>",
        '<b>bold</b> &amp; <a href="javascript:alert(3)">link</a>',
    ]
    for text in attacks:
        sender.send(text)
    sender.send("done")
    for page in (sender, reader):
        expect(page.message("done")).to_have_count(1)
        assert page.contents() == [*attacks, "done"]
        expect(page.page.locator("#log img, #log script, #log b, #log a")).to_have_count(0)
        # Give a broken image's error handler, had there been one, time to fire.
        page.page.wait_for_load_state("networkidle")
        assert page.dialogs == []


def test_classes_follow_the_server_and_have_their_own_colours(processes, client_pages):
    server = processes({"plugins": {"priority": {"classes": {"alert": 20}}}})
    page = client_pages(server)
    options = page.testid("class-select").locator("option")
    expect(options).to_have_text(["alert", "critical", "normal", "status"])
    expect(page.testid("class-select")).to_have_value("normal")

    for cls in ("critical", "normal", "status", "alert"):
        page.send(f"a {cls} message", cls)
    expect(page.messages).to_have_count(4)

    def colour(cls: str) -> str:
        content = page.message(f"a {cls} message").locator(".content")
        return content.evaluate("el => getComputedStyle(el).color")

    colours = {cls: colour(cls) for cls in ("critical", "normal", "status", "alert")}
    assert colours["critical"] != colours["status"], colours
    assert len(set(colours.values())) == 4, colours

    # The priority demo: status messages, then one critical, queued together; the
    # critical one goes out first (test_priority_demo.py has more).
    page.testid("priority-test").click()
    expect(page.messages).to_have_count(9)
    assert [m.get_attribute("data-class") for m in page.messages.all()[4:]] == [
        "critical",
        *["status"] * 4,
    ]


def test_heartbeat_interval_and_client_count_follow_the_server(processes, client_pages):
    server = processes(
        {"plugins": {"heartbeat": {"tiers": [{"max_clients": 1, "interval": 1}, {"interval": 2}]}}}
    )
    first = client_pages(server)
    expect(first.testid("heartbeat")).to_have_text("every 1 s")
    expect(first.testid("pulse")).to_have_attribute("data-beats", re.compile(r"^[1-9]"))
    expect(first.testid("clients")).to_have_text("1")
    beats = int(first.testid("pulse").get_attribute("data-beats"))
    expect(first.testid("pulse")).to_have_attribute("data-beats", str(beats + 1))

    second = client_pages(server)
    expect(second.testid("heartbeat")).to_have_text("every 2 s")
    # The first tab learns the new tier from the next heartbeat frame.
    expect(first.testid("heartbeat")).to_have_text("every 2 s")
    expect(first.testid("clients")).to_have_text("2")


def test_keyboard_alone_and_a_phone_sized_screen(processes, client_pages):
    server = processes()
    page = client_pages(server, viewport={"width": 360, "height": 640})
    keyboard = page.page.keyboard

    # The message box has the focus from the start; Enter sends, Shift+Enter breaks lines.
    expect(page.testid("message-input")).to_be_focused()
    keyboard.type("first line")
    keyboard.press("Shift+Enter")
    keyboard.type("second line")
    keyboard.press("Enter")
    expect(page.message("first line\nsecond line")).to_have_count(1)

    # Shift+Tab reaches the class picker; arrows change it; Tab comes back to the box.
    keyboard.press("Shift+Tab")
    expect(page.testid("class-select")).to_be_focused()
    keyboard.press("ArrowUp")
    expect(page.testid("class-select")).to_have_value("critical")
    keyboard.press("Tab")
    expect(page.testid("message-input")).to_be_focused()
    keyboard.press("Tab")
    expect(page.testid("send")).to_be_focused()
    keyboard.press("Tab")
    expect(page.testid("burst")).to_be_focused()
    keyboard.press("Tab")
    expect(page.testid("priority-test")).to_be_focused()

    # A long word wraps instead of widening the page; the newest message stays in view.
    page.testid("message-input").focus()
    long_word = "x" * 400
    for i in range(15):
        keyboard.type(f"filler {i}")
        keyboard.press("Enter")
    keyboard.type(long_word)
    keyboard.press("Enter")
    newest = page.message(long_word)
    expect(newest).to_have_attribute("data-class", "critical")
    expect(newest).to_be_in_viewport()
    widths = page.page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    expect(page.testid("log")).to_have_attribute("aria-live", "polite")


def test_errors_are_shown_by_the_send_box(processes, client_pages):
    server = processes()
    routes = []

    def route(ws) -> None:
        upstream = ws.connect_to_server()
        routes.append(ws)

        def to_server(message) -> None:
            # Frames the shipped client never sends, so that the real server answers them.
            content = json.loads(message).get("content") if isinstance(message, str) else None
            if content == "please send broken JSON":
                upstream.send("{not json")
            elif content == "please send an unknown class":
                upstream.send(json.dumps({"type": "shout", "content": "hi"}))
            else:
                upstream.send(message)

        ws.on_message(to_server)

    page = client_pages(server, prepare=lambda p: p.route_web_socket(re.compile(r"/ws"), route))
    error = page.page.locator("footer").get_by_test_id("error")

    page.send("please send an unknown class")
    expect(error).to_have_attribute("data-code", "invalid_message")
    expect(error).to_be_visible()
    expect(error).to_contain_text("'type' must be one of")

    page.send("please send broken JSON")
    expect(error).to_have_attribute("data-code", "invalid_json")
    expect(error).to_contain_text("not valid JSON")
    # Rejected frames leave the connection open, and nothing reached the log.
    expect(page.connection).to_have_attribute("data-state", "open")
    expect(page.messages).to_have_count(0)

    # Dismissed from the keyboard.
    page.page.get_by_role("button", name="Dismiss the error").focus()
    page.page.keyboard.press("Enter")
    expect(error).to_be_hidden()
    expect(page.testid("message-input")).to_be_focused()

    # A slow consumer is told why and closed with 1013 (played here by the route, since
    # a real one needs a client that stops reading); the client comes back by itself.
    client_id = page.client_id()
    routes[-1].send(
        json.dumps(
            {
                "type": "error",
                "code": "slow_consumer",
                "message": "the connection cannot keep up with its messages",
                "dropped": 1200,
            }
        )
    )
    routes[-1].close(code=1013, reason="the connection cannot keep up with its messages")
    expect(error).to_have_attribute("data-code", "slow_consumer")
    expect(error).to_contain_text("Reconnecting")
    expect(page.page.locator("#log li.system.warn")).to_contain_text(
        ["Disconnected: the connection cannot keep up with its messages."]
    )
    page.wait_open()
    assert len(routes) == 2
    expect(page.testid("session")).to_have_text("resumed")
    expect(page.testid("client-id")).to_have_text(client_id)
