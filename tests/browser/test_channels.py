"""The browser client's channels in a real Chromium against `server.py` processes: rooms,
presence, direct messages, unread counts, coming back after a reload or a restart, and
the page on a phone.

Each test starts its own server with the shipped config's channel rules: the default
channel `broadcast`, rooms with presence that only their members may write to, and a
personal channel per user for direct messages.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.browser.harness import expect, skip_reason, wait_for
from tests.support.config import merge

if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

CHANNELS = {
    "channels": {
        "default": "broadcast",
        "max_per_connection": 8,
        "namespaces": {
            "default": {"history": True, "presence": False, "publish": "any"},
            "room": {"history": True, "presence": True, "publish": "subscribers"},
            "user": {"personal": True, "history": False},
        },
    },
}

WIDE = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}


def start(processes, changes: dict | None = None):
    return processes(merge(CHANNELS, changes or {}))


def in_room(page, room: str = "lobby") -> None:
    page.join(room)
    expect(page.title).to_have_text(f"#{room}")
    expect(page.conversation(f"room:{room}")).to_have_attribute("aria-current", "true")


def attribute(locator, name: str) -> list[str | None]:
    return [element.get_attribute(name) for element in locator.all()]


def exchange(pages, sender, text: str, cls: str = "normal") -> None:
    """`sender` writes `text` in the conversation it shows; wait until `pages` show it."""
    sender.send(text, cls)
    for page in pages:
        expect(page.message(text)).to_have_count(1)


def test_a_room_is_shared_by_its_members_and_no_one_else(processes, client_pages):
    server = start(processes)
    alice = client_pages(server)
    bob = client_pages(server)
    carol = client_pages(server)
    for page in (alice, bob):
        in_room(page)

    said = [
        (alice, "normal", "Is the deploy done?"),
        (bob, "critical", "Rolling back: error rate above 5%"),
        (alice, "status", "looking at the dashboards"),
    ]
    for sender, cls, text in said:
        exchange((alice, bob), sender, text, cls)
    texts = [text for _, _, text in said]
    for page in (alice, bob):
        assert page.contents() == texts
        assert attribute(page.messages, "data-channel") == ["room:lobby"] * 3
        expect(page.messages.first).to_have_attribute("data-user", alice.user())
        expect(page.messages.first.locator(".from")).to_contain_text(alice.name())

    # Carol is not in the room: the server sent her none of it, and she has no such entry.
    carol.send("carol in the default channel")
    expect(carol.message("carol in the default channel")).to_have_count(1)
    assert [f["content"] for f in carol.received(type="message")] == [
        "carol in the default channel"
    ]
    expect(carol.conversation("room:lobby")).to_have_count(0)
    # The room's view shows the room alone: the default channel's message is elsewhere.
    expect(alice.unread("default")).to_have_text("1")
    assert alice.contents() == texts
    alice.open_conversation("default")
    expect(alice.title).to_have_text("broadcast")
    assert alice.contents() == ["carol in the default channel"]
    expect(alice.unread("default")).to_be_hidden()


def test_presence_follows_joins_and_leaves_as_they_happen(processes, client_pages):
    server = start(processes)
    alice = client_pages(server)
    bob = client_pages(server)
    carol = client_pages(server)
    in_room(alice)
    expect(alice.people).to_have_count(1)
    expect(alice.people.first).to_have_attribute("data-user", alice.user())
    expect(alice.people.first).to_contain_text("you")

    in_room(bob)  # alice hears of it by a `join`; bob's list comes with `subscribed`
    for page in (alice, bob):
        expect(page.people).to_have_count(2)
        assert sorted(page.people_users()) == sorted([alice.user(), bob.user()])
        expect(page.testid("channel-info")).to_have_text("2 people here")
        # The page's own user comes first.
        expect(page.people.first).to_have_attribute("data-user", page.user())
    in_room(carol)
    expect(alice.people).to_have_count(3)

    # Bob leaves: his page unsubscribes and drops the room; the others see him go.
    bob.testid("leave").click()
    expect(bob.conversation("room:lobby")).to_have_count(0)
    expect(bob.title).to_have_text("broadcast")
    for page in (alice, carol):
        expect(page.people).to_have_count(2)
        assert bob.user() not in page.people_users()
    # Carol closes her tab: gone from the room too.
    carol.page.close()
    expect(alice.people).to_have_count(1)
    expect(alice.testid("channel-info")).to_have_text("1 person here")
    # Each change came as it happened (join/leave frames), not from asking again.
    kinds = [f["type"] for f in alice.received(channel="room:lobby") if f["type"] != "message"]
    assert kinds[:1] == ["subscribed"] and kinds.count("join") == 2, kinds
    assert kinds.count("leave") == 2 and "presence" not in kinds[kinds.index("join") :], kinds


def test_a_direct_message_reaches_its_recipient_only(processes, client_pages):
    server = start(processes)
    alice = client_pages(server)
    bob = client_pages(server)
    carol = client_pages(server)
    for page in (alice, bob, carol):
        in_room(page)
    expect(alice.people).to_have_count(3)

    # From the room's people list, alice opens a conversation with bob and writes.
    alice.write_to(bob.user())
    expect(alice.title).to_have_text(f"@{bob.name()}")
    expect(alice.testid("message-input")).to_be_focused()
    alice.send("psst, bob")
    expect(alice.message("psst, bob")).to_have_class(re.compile(r"\bmine\b"))

    # Bob: a new conversation with alice, one unread; opening it shows the message.
    expect(bob.unread(f"dm:{alice.user()}")).to_have_text("1")
    bob.open_conversation(f"dm:{alice.user()}")
    expect(bob.message("psst, bob")).to_have_attribute("data-user", alice.user())
    expect(bob.unread(f"dm:{alice.user()}")).to_be_hidden()
    # His answer lands in the same conversation on both sides.
    bob.send("what is it?")
    expect(bob.message("what is it?")).to_have_count(1)
    expect(alice.message("what is it?")).to_have_count(1)
    assert alice.contents() == ["psst, bob", "what is it?"]
    assert bob.contents() == ["psst, bob", "what is it?"]
    expect(alice.conversation(f"dm:{bob.user()}")).to_have_count(1)

    # The frames went to the personal channels, and carol got neither of them.
    assert [f["content"] for f in bob.received(channel=f"user:{bob.user()}")] == ["psst, bob"]
    assert [f["content"] for f in alice.received(channel=f"user:{alice.user()}")] == ["what is it?"]
    expect(carol.page.get_by_test_id("conversation").filter(has_text=alice.name())).to_have_count(0)
    assert all(f.get("content") not in ("psst, bob", "what is it?") for f in carol.received())
    # And nothing of it in the room.
    alice.open_conversation("room:lobby")
    expect(alice.messages).to_have_count(0)


def test_unread_counts_rise_for_a_channel_not_shown_and_clear_when_it_is_opened(
    processes, client_pages
):
    server = start(processes)
    alice = client_pages(server)
    bob = client_pages(server)
    for page in (alice, bob):
        in_room(page)
    alice.open_conversation("default")
    expect(alice.title).to_have_text("broadcast")

    for i in range(1, 4):
        bob.send(f"in the lobby {i}")
        expect(alice.unread("room:lobby")).to_have_text(str(i))
    expect(alice.conversation("room:lobby")).to_have_attribute("aria-label", "#lobby, 3 unread")
    assert alice.page.title().startswith("(3) ")
    # What arrives in the conversation on screen is read already; so are one's own.
    bob.open_conversation("default")
    exchange((alice, bob), bob, "in the default channel")
    exchange((alice, bob), alice, "alice answers")
    expect(alice.unread("default")).to_be_hidden()
    expect(bob.unread("room:lobby")).to_be_hidden()

    alice.open_conversation("room:lobby")
    expect(alice.unread("room:lobby")).to_be_hidden()
    assert alice.contents() == [f"in the lobby {i}" for i in range(1, 4)]
    assert not alice.page.title().startswith("(")
    expect(bob.unread("default")).to_be_hidden()


def test_a_reloaded_tab_is_back_in_its_room_with_what_it_missed(processes, client_pages):
    server = start(processes)
    alice = client_pages(server)
    bob = client_pages(server)
    exchange((alice, bob), alice, "in the default channel before bob goes")
    for page in (alice, bob):
        in_room(page)
    exchange((alice, bob), alice, "in the room before bob goes")
    bob_user = bob.user()
    alice.write_to(bob_user)
    alice.send("a direct message bob has seen")
    bob.open_conversation(f"dm:{alice.user()}")
    expect(bob.message("a direct message bob has seen")).to_have_count(1)
    bob.open_conversation("room:lobby")

    # The same tab leaves and comes back: its sessionStorage keeps the session.
    bob.page.goto("about:blank")
    wait_for(lambda: server.health()[1]["connections"] == 1, what="bob's tab to go")
    alice.open_conversation("room:lobby")
    expect(alice.people).to_have_count(1)
    exchange((alice,), alice, "missed 1")
    exchange((alice,), alice, "missed 2")
    alice.open_conversation("default")
    exchange((alice,), alice, "missed in the default channel")
    alice.open_conversation("room:lobby")
    bob.open().wait_open()

    expect(bob.testid("session")).to_have_text("resumed")
    expect(bob.testid("client-id")).to_have_text(bob_user)
    # Back in the room it was looking at, with what it missed there, once each.
    expect(bob.title).to_have_text("#lobby")
    expect(bob.messages).to_have_count(2)
    assert bob.contents() == ["missed 1", "missed 2"]
    assert attribute(bob.messages, "data-history") == ["true", "true"]
    expect(alice.people).to_have_count(2)
    expect(bob.people).to_have_count(2)
    # What it missed elsewhere waits in the default channel, counted as unread.
    expect(bob.unread("default")).to_have_text("1")
    bob.open_conversation("default")
    assert bob.contents() == ["missed in the default channel"]
    # The direct messages are still there: the tab kept them.
    bob.open_conversation(f"dm:{alice.user()}")
    assert bob.contents() == ["a direct message bob has seen"]

    # Live again, in the room, once.
    bob.open_conversation("room:lobby")
    exchange((alice, bob), alice, "welcome back")
    assert bob.contents() == ["missed 1", "missed 2", "welcome back"]


def test_after_a_server_restart_each_channel_gets_what_it_missed_once(
    processes, client_pages, own_redis, key_prefix
):
    """Two instances on one Redis: bob's instance restarts while alice, on the other,
    writes in the room, the default channel and to bob; bob's page (not reloaded)
    comes back in its room and sorts the replay into the right conversations."""
    store = {
        # A dead instance's members leave the room within instance_ttl.
        "store": {
            "backend": "redis",
            "redis_url": own_redis.url,
            "key_prefix": key_prefix,
            "instance_ttl": 3,
        }
    }
    left = start(processes, store)
    right = start(processes, store)
    alice = client_pages(left)
    bob = client_pages(right)
    for page in (alice, bob):
        in_room(page)
    exchange((alice, bob), alice, "room before")
    for page in (alice, bob):
        page.open_conversation("default")
    exchange((alice, bob), alice, "default before")
    for page in (alice, bob):
        page.open_conversation("room:lobby")

    right.kill()
    expect(bob.connection).to_have_attribute("data-state", re.compile("reconnecting|connecting"))
    expect(alice.people).to_have_count(1)  # bob's instance died: its members leave
    exchange((alice,), alice, "room while bob was away")
    alice.open_conversation("default")
    exchange((alice,), alice, "default while bob was away")
    right.start()

    bob.wait_open()
    expect(bob.testid("session")).to_have_text("resumed")
    expect(bob.page.locator("#log li.system.good")).to_contain_text(["session resumed"])
    expect(bob.unread("default")).to_have_text("1")
    assert bob.contents() == ["room before", "room while bob was away"]
    bob.open_conversation("default")
    assert bob.contents() == ["default before", "default while bob was away"]
    expect(bob.people).to_have_count(0)  # the default channel has no people list
    bob.open_conversation("room:lobby")
    expect(bob.people).to_have_count(2)
    # Nothing came twice: the server replayed only what was missed, the page showed it once.
    replayed = [f["content"] for f in bob.received(type="message") if f.get("history")]
    assert sorted(replayed) == ["default while bob was away", "room while bob was away"]


def test_a_message_replayed_again_is_shown_once_and_in_its_own_channel(processes, client_pages):
    """History frames carry their original id: a replay that overlaps what the page shows
    adds nothing. Ids are per channel: the same id in another channel is another message.
    (The server does not send such overlaps here; a route plays them.)"""
    server = start(processes)
    routes = []

    def route(ws) -> None:
        ws.connect_to_server()
        routes.append(ws)

    alice = client_pages(server, prepare=lambda p: p.route_web_socket(re.compile(r"/ws"), route))
    bob = client_pages(server)
    for page in (alice, bob):
        in_room(page)
    exchange((alice, bob), bob, "said once")
    shown = alice.message("said once")
    frame = {
        "type": "message",
        "id": shown.get_attribute("data-id"),
        "channel": "room:lobby",
        "from": bob.client_id(),
        "user": bob.user(),
        "class": "normal",
        "priority": 5,
        "content": "said once",
        "ts": 1795551772.88,
    }
    routes[-1].send(json.dumps({**frame, "history": True}))
    routes[-1].send(json.dumps({**frame, "channel": "broadcast", "content": "same id elsewhere"}))
    expect(alice.unread("default")).to_have_text("1")  # frames are handled in order
    expect(alice.message("said once")).to_have_count(1)
    assert alice.contents() == ["said once"]
    alice.open_conversation("default")
    assert alice.contents() == ["same id elsewhere"]


def test_joining_errors_are_shown_by_the_form(processes, client_pages):
    server = start(processes, {"channels": {"max_per_connection": 2}})
    page = client_pages(server)
    error = page.testid("join-error")

    # A name the server would refuse: said at once, as text.
    page.join("<img src=x onerror=alert(1)>")
    expect(error).to_have_attribute("data-code", "invalid_name")
    expect(error).to_contain_text("“<img src=x onerror=alert(1)>” is not a room name")
    expect(page.testid("join-input")).to_have_attribute("aria-invalid", "true")
    expect(page.page.locator("#sidebar img")).to_have_count(0)
    assert page.received(type="error") == []
    # A well-formed name the server has no namespace for: the server's own words.
    page.join("nowhere:lobby")
    expect(error).to_have_attribute("data-code", "invalid_channel")
    expect(error).to_have_text("Could not join nowhere:lobby: no such namespace: 'nowhere'.")

    in_room(page, "one")  # the default channel and this one: the limit
    page.join("two")
    expect(error).to_have_attribute("data-code", "too_many_channels")
    expect(error).to_contain_text("at most 2 channels")
    expect(page.conversation("room:two")).to_have_count(0)
    expect(page.title).to_have_text("#one")
    # Typing again clears it; the connection was never in danger.
    page.testid("join-input").fill("tw")
    expect(error).to_be_hidden()
    expect(page.connection).to_have_attribute("data-state", "open")


def test_on_a_phone_the_rooms_are_a_drawer_away_and_nothing_scrolls_sideways(
    processes, client_pages
):
    server = start(processes)
    phone = client_pages(server, viewport=PHONE)
    desk = client_pages(server, viewport=WIDE)
    in_room(desk)
    sidebar = phone.testid("sidebar")
    expect(sidebar).to_be_hidden()
    expect(phone.testid("message-input")).to_be_in_viewport()

    # The drawer: opened by the button, it holds the channel list and the join form.
    phone.testid("sidebar-open").click()
    expect(sidebar).to_be_in_viewport()
    expect(phone.testid("sidebar-open")).to_have_attribute("aria-expanded", "true")
    assert phone.page_width()[0] <= phone.page_width()[1]
    phone.testid("join-input").fill("lobby")
    phone.testid("join-input").press("Enter")
    expect(sidebar).to_be_hidden()  # joined: the drawer gets out of the way
    expect(phone.title).to_have_text("#lobby")
    expect(phone.testid("message-input")).to_be_focused()

    # The people list, too, is a drawer; Escape closes it.
    expect(phone.testid("people")).to_be_hidden()
    phone.testid("people-open").click()
    expect(phone.people).to_have_count(2)
    expect(phone.testid("people")).to_be_in_viewport()
    phone.page.keyboard.press("Escape")
    expect(phone.testid("people")).to_be_hidden()
    expect(phone.testid("people-open")).to_be_focused()

    # A message in another conversation shows on the drawer button; the drawer's
    # entry leads there and closes the drawer.
    desk.open_conversation("default")
    desk.send("x" * 300)  # a long word: wraps
    expect(phone.testid("unread-total")).to_have_text("1")
    phone.testid("sidebar-open").click()
    expect(phone.unread("default")).to_have_text("1")
    phone.conversation("default").click()
    expect(sidebar).to_be_hidden()
    expect(phone.message("x" * 300)).to_be_in_viewport()
    expect(phone.testid("unread-total")).to_be_hidden()
    # Every button of the header is still on the screen, and nothing sticks out.
    for testid in ("sidebar-open", "send"):
        expect(phone.testid(testid)).to_be_in_viewport()
    width, viewport = phone.page_width()
    assert width <= viewport, (width, viewport)
    log = phone.testid("log").evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert log[0] <= log[1], log
    if os.environ.get("SCREENSHOT_DIR"):  # to look at it
        phone.page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "phone.png"))


def test_the_picture_in_the_docs(processes, client_pages, docs_dir, tmp_path):
    """Three people in a room, a second room with unread messages, a direct message:
    the README's picture (refreshed with UPDATE_SCREENSHOT=1 or when missing)."""
    # Signed in by name, as a demo would: people are shown as alice, bob and carol.
    auth = {"enabled": True, "secret": "the-picture-secret-" + "x" * 32, "dev_tokens": True}
    server = start(
        processes, {"plugins": {"auth": auth, "heartbeat": {"tiers": [{"interval": 1}]}}}
    )
    alice = client_pages(server, viewport=WIDE, wait=False).sign_in("alice")
    bob = client_pages(server, wait=False).sign_in("bob")
    carol = client_pages(server, wait=False).sign_in("carol")
    alice.send("Standup in 10 minutes", "status")
    for page in (alice, bob, carol):
        in_room(page)
    in_room(carol, "ops")
    conversation = [
        (alice, "normal", "Is the deploy done?"),
        (bob, "critical", "Rolling back: error rate above 5% on eu-west"),
        (carol, "status", "carol is looking at the dashboards"),
        (alice, "normal", "Thanks. Bob, can you write up what happened?"),
    ]
    carol.open_conversation("room:lobby")
    for sender, cls, text in conversation:
        exchange((alice, bob, carol), sender, text, cls)
    carol.open_conversation("room:ops")
    carol.send("eu-west error rate back under 0.1%", "status")
    alice.join("ops")
    expect(alice.title).to_have_text("#ops")
    alice.open_conversation("room:lobby")
    carol.send("p99 latency is back to normal too")
    expect(alice.unread("room:ops")).to_have_text("1")
    bob.write_to(alice.user())
    bob.send("Sure, I'll have it in the doc by noon.")
    expect(alice.unread(f"dm:{bob.user()}")).to_have_text("1")

    # Taken just after a heartbeat, while its pulse is lit.
    alice.testid("message-input").blur()
    expect(alice.testid("pulse")).to_have_attribute("data-beats", re.compile(r"^[1-9]"))
    beats = int(alice.testid("pulse").get_attribute("data-beats"))
    expect(alice.testid("pulse")).to_have_attribute("data-beats", str(beats + 1))
    target = docs_dir / "client.png"
    if os.environ.get("UPDATE_SCREENSHOT") != "1" and target.exists():
        target = tmp_path / "client.png"
    alice.page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
