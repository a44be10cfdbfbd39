"""Logs: one line per event worth knowing, JSON if asked, and never a session token."""

from __future__ import annotations

import json

import pytest

from tests.support.waiting import until, until_async
from tests.support.ws_client import WsClient


def json_lines(log: str) -> list[dict]:
    """The log's JSON lines (not a last one still being written)."""
    return [json.loads(x) for x in log.splitlines() if x.startswith("{") and x.endswith("}")]


async def resume_once_admitted(port: int, token: str) -> tuple[WsClient, int]:
    """Resume `token` as soon as the server takes it, and how many attempts it took: while
    the previous connection's slot is not given back yet, an attempt is refused (one
    more URL with the token for the log to leave out)."""
    attempts = 0

    async def attempt() -> WsClient | None:
        nonlocal attempts
        attempts += 1
        client = await WsClient.connect(port, session=token, wait_welcome=False)
        frame = await client.recv()
        if frame["type"] == "welcome":
            client.welcome = frame
            return client
        assert frame["code"] == "too_many_connections", frame
        return None

    client = await until_async(attempt, timeout=3, step=0.05)
    return client, attempts


@pytest.mark.gen_test(timeout=30)
async def test_session_tokens_never_reach_the_log(processes):
    server = processes(
        {
            "logging": {"format": "json", "level": "debug"},
            "plugins": {"throttle": {"max_connections_per_ip": 1}},
        }
    )
    first = await WsClient.connect(server.port)
    token = first.session
    # A refusal, a cross-origin 403 and a resume, each with the token in the URL.
    refused = await WsClient.connect(server.port, session=token, wait_welcome=False)
    assert (await refused.recv())["code"] == "too_many_connections"
    with pytest.raises(Exception, match="403"):
        await WsClient.connect(
            server.port, session=token, headers={"Origin": "http://evil.example"}
        )
    first.close()
    again, attempts = await resume_once_admitted(server.port, token)
    assert again.welcome["resumed"] is True

    def upgrades() -> int:
        return sum(x["msg"].startswith("101 GET /ws") for x in json_lines(server.log()))

    # Every request is in the log (the first, the refused one, each resume attempt)
    # before it is searched for the token.
    await until(lambda: upgrades() == 2 + attempts)
    log = server.log()
    assert token not in log
    lines = json_lines(log)
    assert lines and all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
    messages = [x["msg"] for x in lines]
    assert any("listening on" in m for m in messages)
    assert any("refused a connection" in m and "too_many_connections" in m for m in messages)
    assert any(m.startswith("403 GET /ws") for m in messages)


@pytest.mark.gen_test(timeout=30)
async def test_repeated_refusals_are_summarised_not_logged_one_by_one(servers, caplog):
    server = await servers({"plugins": {"throttle": {"max_connections_per_ip": 1}}})
    server.dispatcher.refusals.every = 0.3
    await WsClient.connect(server.port)
    with caplog.at_level("INFO", logger="server"):
        for _ in range(20):
            refused = await WsClient.connect(server.port, wait_welcome=False)
            await refused.recv()

        def refusal_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]

        # The first refusal at once, then the summary when `every` has passed.
        await until(lambda: len(refusal_lines()) >= 2, timeout=2)
    lines = refusal_lines()
    assert len(lines) == 2, lines
    assert "refused 19 more connections" in lines[1] and "127.0.0.1 (19)" in lines[1]
