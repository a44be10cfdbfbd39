"""The browser-test harness: where Chromium is, how it is launched, a client tab.

Playwright never downloads a browser here: it drives the Chromium named by $CHROMIUM
(./dev test sets it), else /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the tests skip themselves with the reason
    expect = sync_playwright = None

from tests.support.timing import scaled

CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

DESKTOP = {"width": 1000, "height": 700}

if expect is not None:
    expect.set_options(timeout=scaled(10_000))


def wait_for(
    condition: Callable[[], object], *, page=None, timeout: float = 10, what: str = ""
) -> None:
    """Poll `condition` until it holds. With a `page`, wait through Playwright, so the
    page's events (frames, dialogs) keep being delivered meanwhile."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        if page is not None:
            page.wait_for_timeout(50)
        else:
            time.sleep(0.05)


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (set CHROMIUM, or run ./dev test, which installs it)"
    return None


class ClientPage:
    """One browser tab running the client, with what it received and what went wrong."""

    def __init__(self, page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.sockets: list = []
        self.frames: list[list[dict]] = []  # decoded frames, one list per socket
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", self._on_console)
        page.on("websocket", self._on_websocket)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _on_console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def _on_websocket(self, socket) -> None:
        received: list[dict] = []
        self.sockets.append(socket)
        self.frames.append(received)

        def on_frame(payload) -> None:
            if isinstance(payload, str):
                received.append(json.loads(payload))

        socket.on("framereceived", on_frame)

    # -- driving ----------------------------------------------------------------------

    def open(self) -> ClientPage:
        self.page.goto(self.base_url + "/")
        return self

    def wait_open(self) -> ClientPage:
        expect(self.connection).to_have_attribute("data-state", "open")
        return self

    def send(self, text: str, cls: str = "normal") -> None:
        self.page.select_option("#cls", cls)
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")

    def sign_in(self, name: str) -> ClientPage:
        """Sign in by name in the page's sign-in panel (the server hands out dev tokens)."""
        expect(self.testid("signin")).to_be_visible()
        self.testid("signin-user").fill(name)
        self.testid("signin-submit").click()
        expect(self.testid("signin")).to_be_hidden()
        return self.wait_open()

    def join(self, name: str) -> None:
        """Type a room name into the join form and submit it (the form is in the sidebar,
        which a narrow page shows as a drawer: opened first)."""
        if self.testid("sidebar-open").is_visible():
            self.testid("sidebar-open").click()
        self.testid("join-input").fill(name)
        self.testid("join-input").press("Enter")

    def write_to(self, user: str) -> None:
        """Open a direct-message conversation from the people list of the room on screen
        (a drawer below desktop widths: opened first)."""
        if self.testid("people-open").is_visible():
            self.testid("people-open").click()
        person = self.testid("people-list").locator(f'[data-testid=person][data-user="{user}"]')
        person.get_by_test_id("person-dm").click()

    def open_conversation(self, key: str) -> None:
        """Show a conversation: a channel's name, or "dm:<user>"; "default" is the
        default channel."""
        if self.testid("sidebar-open").is_visible():
            self.testid("sidebar-open").click()
        self.conversation(key).click()

    # -- reading ----------------------------------------------------------------------

    def testid(self, name: str):
        return self.page.get_by_test_id(name)

    @property
    def connection(self):
        return self.testid("connection")

    @property
    def messages(self):
        return self.page.locator("#log li.msg")

    def message(self, text: str):
        """The rendered message whose content is exactly `text`."""
        return self.messages.filter(
            has=self.page.locator(".content", has_text=re.compile(f"^{re.escape(text)}$"))
        )

    def contents(self) -> list[str]:
        return self.messages.locator(".content").all_text_contents()

    def client_id(self) -> str:
        return self.testid("client-id").inner_text()

    def user(self) -> str:
        """Who this page is (`welcome.user`): without authentication, its client id."""
        return self.testid("user").get_attribute("data-user")

    def name(self) -> str:
        """How this page's person is shown (a guest: by the start of its client id)."""
        return self.testid("user").inner_text()

    def conversation(self, key: str):
        """The sidebar entry of a conversation (see `open_conversation`)."""
        return self.page.locator(f'[data-testid=conversation][data-key="{key}"]')

    def unread(self, key: str):
        return self.conversation(key).get_by_test_id("unread")

    @property
    def title(self):
        return self.testid("channel-title")

    @property
    def people(self):
        """The people list of the room on screen: one entry per user, `data-user`."""
        return self.testid("people-list").get_by_test_id("person")

    def people_users(self) -> list[str]:
        return [p.get_attribute("data-user") for p in self.people.all()]

    def received(self, **match) -> list[dict]:
        """Every frame this page received, on any of its sockets, whose keys match."""
        return [
            frame
            for frames in self.frames
            for frame in frames
            if all(frame.get(k) == v for k, v in match.items())
        ]

    def page_width(self) -> list[int]:
        """[scrollWidth, clientWidth] of the document: equal when nothing sticks out."""
        return self.page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )

    def message_frames(self, socket_index: int) -> list[dict]:
        return [f for f in self.frames[socket_index] if f.get("type") == "message"]

    def assert_clean(self) -> None:
        """Nothing the page did broke the CSP or threw, and nothing raised a dialog."""
        assert self.page_errors == [], self.page_errors
        assert self.csp_violations == [], self.csp_violations
        assert self.dialogs == [], self.dialogs
