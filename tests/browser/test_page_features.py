"""The page's own features in a real Chromium against `server.py` processes: signing in
by name, the rate-limit countdown that keeps what was typed, the banner while the
instance's Redis is down, and the priority demo."""

from __future__ import annotations

import re

import pytest

from tests.browser.harness import expect, skip_reason
from tests.browser.test_channels import CHANNELS, in_room
from tests.support.config import merge

if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

SECRET = "a-test-secret-of-at-least-32-bytes-0123456789"


def signing_in(anonymous: bool = False) -> dict:
    """Auth on, with the demo's sign-in by name."""
    return {
        "plugins": {
            "auth": {
                "enabled": True,
                "secret": SECRET,
                "dev_tokens": True,
                "anonymous": anonymous,
            }
        }
    }


def test_signed_in_by_name_people_are_shown_by_their_names(processes, client_pages):
    server = processes(merge(CHANNELS, signing_in()))
    alice = client_pages(server, wait=False)
    # Dev tokens are on: the page asks who this is before it connects at all.
    expect(alice.testid("signin-name-form")).to_be_visible()
    assert alice.sockets == []
    alice.sign_in("alice")
    bob = client_pages(server, wait=False)
    bob.sign_in("bob")
    for page, name in ((alice, "alice"), (bob, "bob")):
        expect(page.testid("user")).to_have_text(name)
        assert page.received(type="welcome")[0]["user"] == name

    alice.send("hello from alice")
    expect(alice.message("hello from alice").locator(".from")).to_have_text("alice (you)")
    expect(bob.message("hello from alice").locator(".from")).to_have_text("alice")
    expect(bob.message("hello from alice")).to_have_attribute("data-user", "alice")

    for page in (alice, bob):
        in_room(page)
    expect(bob.people).to_have_count(2)
    assert sorted(bob.people_users()) == ["alice", "bob"]
    expect(bob.testid("people-list").locator('[data-user="alice"] .name')).to_have_text("alice")
    expect(bob.testid("people-list").locator('[data-user="bob"] .name')).to_have_text("bob")
    # No hex client id anywhere a person is shown.
    for page in (alice, bob):
        shown = page.page.locator(".from, .people-list .name, #me").all_inner_texts()
        assert not [t for t in shown if re.search(r"[0-9a-f]{16}", t)], shown

    # Signing out makes a guest of the tab, which this server does not take: it asks again.
    alice.testid("signout").click()
    expect(alice.connection).to_have_attribute("data-state", "refused")
    expect(alice.testid("signin-why")).to_contain_text("does not take guests")


def test_a_server_without_guests_asks_for_a_token(processes, client_pages):
    server = processes({"plugins": {"auth": {"enabled": True, "secret": SECRET}}})
    page = client_pages(server, wait=False)
    # No dev tokens: the page tries as a guest, is refused, and asks for a token.
    expect(page.connection).to_have_attribute("data-state", "refused")
    expect(page.testid("signin-token-form")).to_be_visible()
    expect(page.testid("signin-guest")).to_be_hidden()
    expect(page.testid("signin-why")).to_contain_text("does not take guests")


def test_a_refused_message_stays_in_the_box_through_the_countdown(processes, client_pages):
    server = processes({"plugins": {"ratelimit": {"max_messages_per_second": 0.25, "burst": 1}}})
    page = client_pages(server)
    box = page.testid("message-input")
    page.send("first")
    expect(page.message("first")).to_have_count(1)
    expect(box).to_have_value("")

    page.send("second, typed with care")  # the bucket is empty: refused
    notice = page.testid("rate-limit")
    expect(notice).to_be_visible()
    expect(page.testid("rate-limit-countdown")).to_have_text(re.compile(r"^\d\.\d s$"))
    expect(box).to_have_value("second, typed with care")
    expect(page.testid("send")).to_be_disabled()
    # Enter during the countdown sends nothing and keeps the text; typing goes on.
    box.press("End")
    box.press("Enter")
    box.type("!")
    expect(box).to_have_value("second, typed with care!")
    expect(page.messages).to_have_count(1)

    expect(page.testid("send")).to_be_enabled(timeout=10_000)
    expect(page.testid("rate-limit-countdown")).to_have_text("now")
    box.press("Enter")
    expect(page.message("second, typed with care!")).to_have_count(1)
    expect(box).to_have_value("")
    assert page.contents() == ["first", "second, typed with care!"]


def test_a_banner_says_while_the_instances_redis_is_down(
    processes, client_pages, own_redis, key_prefix
):
    server = processes(
        {"store": {"backend": "redis", "redis_url": own_redis.url, "key_prefix": key_prefix}}
    )
    page = client_pages(server)
    banner = page.testid("redis-banner")
    expect(banner).to_have_attribute("data-redis", "up")
    expect(banner).to_be_hidden()

    own_redis.kill()
    expect(banner).to_be_visible(timeout=20_000)
    expect(banner).to_contain_text("lost its Redis")
    # The instance keeps serving its own clients meanwhile.
    expect(page.connection).to_have_attribute("data-state", "open")
    page.send("while Redis is down")
    expect(page.message("while Redis is down")).to_have_count(1)

    own_redis.start()
    expect(banner).to_be_hidden(timeout=20_000)
    expect(banner).to_have_attribute("data-redis", "up")


def test_the_priority_demo_shows_the_critical_message_overtaking(processes, client_pages):
    server = processes()
    sender = client_pages(server)
    watcher = client_pages(server)
    sender.testid("priority-test").click()
    for page in (sender, watcher):
        expect(page.messages).to_have_count(5)
        # Published last, arrived first: ahead of the status messages queued before it.
        assert [m.get_attribute("data-class") for m in page.messages.all()] == [
            "critical",
            *["status"] * 4,
        ]
        assert page.contents() == [
            "priority demo: critical (sent last)",
            *[f"priority demo: status {i}/4" for i in range(1, 5)],
        ]
    expect(sender.page.locator("#log li.system.demo")).to_contain_text("overtakes")


def test_the_priority_demo_says_so_when_critical_is_not_allowed(processes, client_pages):
    # Guests may not send the restricted class.
    server = processes(signing_in(anonymous=True))
    page = client_pages(server, wait=False)
    page.testid("signin-guest").click()
    page.wait_open()
    # A guest is shown by the start of its client id.
    expect(page.testid("user")).to_have_text(re.compile(r"^guest [0-9a-f]{6}$"))
    page.testid("priority-test").click()
    expect(page.messages).to_have_count(4)
    error = page.testid("error")
    expect(error).to_have_attribute("data-code", "forbidden")
    expect(error).to_contain_text("critical")
    expect(page.page.locator("#log li.system.warn")).to_contain_text(["classes claim"])
    expect(page.connection).to_have_attribute("data-state", "open")
    assert {m.get_attribute("data-class") for m in page.messages.all()} == {"status"}
