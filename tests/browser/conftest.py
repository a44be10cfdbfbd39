"""Fixtures for the browser tests: one headless Chromium, client tabs in fresh contexts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    ClientPage,
    skip_reason,
    sync_playwright,
)
from tests.support.timing import scaled


# Module scope: Playwright's sync API runs its own event loop, which must be gone before
# the Tornado tests of other modules run theirs.
@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One Chromium per module; a plain launch gets a fresh temporary profile."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=scaled(30_000)
        )
        yield chromium
        chromium.close()


@pytest.fixture
def client_pages(browser) -> Iterator[Callable[..., ClientPage]]:
    """Open client tabs: `client_pages(server)`; each in its own browser context."""
    contexts: list = []
    pages: list[ClientPage] = []

    def open_page(
        server,
        *,
        viewport: dict | None = None,
        wait: bool = True,
        bypass_csp: bool = False,
        prepare: Callable | None = None,
    ) -> ClientPage:
        """`prepare(page)` runs before the client loads (to route its WebSocket, say)."""
        context = browser.new_context(viewport=viewport or DESKTOP, bypass_csp=bypass_csp)
        contexts.append(context)
        page = context.new_page()
        if prepare is not None:
            prepare(page)
        client = ClientPage(page, f"http://127.0.0.1:{server.port}").open()
        pages.append(client)
        if wait:
            client.wait_open()
        return client

    yield open_page
    try:
        for client in pages:
            client.assert_clean()
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def docs_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "docs"
