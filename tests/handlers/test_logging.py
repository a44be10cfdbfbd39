"""Logs: one line per event worth knowing, JSON if asked, and never a session token."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.ws_client import WsClient


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
    await asyncio.sleep(0.3)
    again = await WsClient.connect(server.port, session=token)
    assert again.welcome["resumed"] is True
    await asyncio.sleep(0.2)
    log = server.log()
    assert token not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
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
        await asyncio.sleep(0.5)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "refused 19 more connections" in lines[1] and "127.0.0.1 (19)" in lines[1]
