"""The hook contract of plugins/hooks.py, one test per hook, with real sockets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType

import pytest

from core.engine.hookrunner import HookRunner
from core.engine.hooks import Plugin, Veto
from core.wire import frames
from plugins import REGISTRY
from tests.support.waiting import until
from tests.support.ws_client import Closed, WsClient


@dataclass(frozen=True)
class RecorderSettings:
    enabled: bool = True
    veto_connect: bool = False
    raise_connect: bool = False
    veto_message: str = ""  # "", "error", "silent", "close"
    raise_message: bool = False
    raise_close: bool = False
    raise_startup: bool = False
    raise_welcome: bool = False
    welcome_note: str = ""
    rewrite: str = ""  # replace the content of every message with this
    junk_message: bool = False  # return something that is neither a Veto nor a Message


def recorder(name: str, journal: list[tuple[str, str]]) -> type[Plugin]:
    """A plugin class that writes every hook call into `journal`."""

    class Recorder(Plugin):
        Settings = RecorderSettings

        async def on_startup(self) -> None:
            journal.append((name, "startup"))
            if self.settings.raise_startup:
                raise RuntimeError("startup failed on purpose")

        async def on_connect(self, conn):
            journal.append((name, "connect"))
            if self.settings.raise_connect:
                raise RuntimeError("connect failed on purpose")
            if self.settings.veto_connect:
                return Veto("too_many_connections", f"{name} says no", frames.CLOSE_POLICY)
            conn.welcome[f"from_{name}"] = True
            return None

        async def on_welcome(self, conn) -> None:
            journal.append((name, "welcome"))
            if self.settings.raise_welcome:
                raise RuntimeError("welcome failed on purpose")
            if self.settings.welcome_note:
                conn.send_json({"type": "note", "text": self.settings.welcome_note})

        def on_message(self, conn, message):
            journal.append((name, f"message:{message.content}"))
            if self.settings.raise_message:
                raise RuntimeError("message failed on purpose")
            kind = self.settings.veto_message
            if kind == "error":
                return Veto("invalid_message", f"{name} rejects it")
            if kind == "silent":
                return Veto(None)
            if kind == "close":
                return Veto("invalid_message", "bye", close_code=frames.CLOSE_POLICY)
            if self.settings.junk_message:
                return True
            if self.settings.rewrite:
                return message.replace(content=self.settings.rewrite)
            return None

        def on_pong(self, conn, data):
            journal.append((name, f"pong:{data.decode()}"))

        async def on_close(self, conn) -> None:
            journal.append((name, "close"))
            if self.settings.raise_close:
                raise RuntimeError("close failed on purpose")

        async def on_shutdown(self) -> None:
            journal.append((name, "shutdown"))

    Recorder.name = name
    return Recorder


async def start(servers, journal: list, **blocks: dict):
    """An instance with only the recorder plugins `blocks`, in that order."""
    registry = dict(REGISTRY)
    for name in blocks:
        registry[name] = recorder(name, journal)
    without_real_plugins = {name: None for name in REGISTRY}
    return await servers(
        {"plugins": without_real_plugins | blocks}, registry=MappingProxyType(registry)
    )


def calls(journal, hook: str) -> list[str]:
    return [name for name, what in journal if what == hook]


@pytest.mark.gen_test(timeout=10)
async def test_on_startup_runs_in_file_order_before_listening(servers):
    journal: list = []
    server = await start(servers, journal, a={}, b={}, c={})
    assert calls(journal, "startup") == ["a", "b", "c"]
    assert server.port


@pytest.mark.gen_test(timeout=10)
async def test_a_raising_on_startup_stops_start_up(servers):
    journal: list = []
    with pytest.raises(RuntimeError, match="on purpose"):
        await start(servers, journal, a={}, b={"raise_startup": True}, c={})
    assert calls(journal, "startup") == ["a", "b"]
    # What had started (or half-started) is shut down again, in reverse; c never started.
    assert calls(journal, "shutdown") == ["b", "a"]


@pytest.mark.gen_test(timeout=10)
async def test_on_connect_runs_in_order_and_fills_the_welcome(servers):
    journal: list = []
    server = await start(servers, journal, a={}, b={})
    client = await WsClient.connect(server.port)
    assert calls(journal, "connect") == ["a", "b"]
    assert client.welcome["from_a"] is True and client.welcome["from_b"] is True


@pytest.mark.gen_test(timeout=10)
async def test_an_on_connect_veto_refuses_and_rolls_back_the_plugins_before_it(servers):
    journal: list = []
    server = await start(servers, journal, a={}, b={"veto_connect": True}, c={})
    client = await WsClient.connect(server.port, wait_welcome=False)
    error = await client.recv()
    assert error == {"type": "error", "code": "too_many_connections", "message": "b says no"}
    assert await client.closed() == 1008
    assert calls(journal, "connect") == ["a", "b"]  # c never sees it
    assert calls(journal, "close") == ["a"]  # only what admitted it gives back
    assert len(server.hub) == 0


@pytest.mark.gen_test(timeout=10)
async def test_a_raising_on_connect_costs_that_connection_only(servers, caplog):
    journal: list = []
    server = await start(servers, journal, a={}, b={"raise_connect": True})
    with caplog.at_level(logging.ERROR):
        client = await WsClient.connect(server.port, wait_welcome=False)
        error = await client.recv()
        assert error["code"] == "internal_error"
        assert await client.closed() == 1011
    assert any("plugin b: on_connect failed" in r.getMessage() for r in caplog.records)
    health = server.health()
    assert health["status"] == "ok" and health["connections"] == 0


@pytest.mark.gen_test(timeout=10)
async def test_frames_sent_in_on_welcome_come_after_the_welcome_and_before_live_messages(
    servers,
):
    journal: list = []
    server = await start(servers, journal, a={"welcome_note": "hello first"})
    sender = await WsClient.connect(server.port)
    await sender.recv_type("note")
    late = await WsClient.connect(server.port, wait_welcome=False)
    await sender.send("normal", "live")
    first, second = await late.recv(), await late.recv()
    assert first["type"] == "welcome"
    assert second == {"type": "note", "text": "hello first"}
    assert (await late.recv_type("message"))["content"] == "live"
    assert calls(journal, "welcome") == ["a", "a"]


@pytest.mark.gen_test(timeout=10)
async def test_on_message_runs_in_order_for_valid_messages_only(servers):
    journal: list = []
    server = await start(servers, journal, a={}, b={})
    client = await WsClient.connect(server.port)
    await client.send_raw("not json")
    await client.recv_type("error")
    await client.send("normal", "x")
    await client.recv_type("message")
    assert calls(journal, "message:x") == ["a", "b"]
    assert not any(what.startswith("message:not") for _, what in journal)


@pytest.mark.gen_test(timeout=10)
async def test_an_on_message_veto_stops_the_broadcast_and_tells_only_the_sender(servers):
    journal: list = []
    server = await start(servers, journal, a={"veto_message": "error"}, b={})
    sender = await WsClient.connect(server.port)
    other = await WsClient.connect(server.port)
    await sender.send("normal", "blocked")
    error = await sender.recv_type("error")
    assert error["message"] == "a rejects it"
    await other.nothing_for(0.3)
    assert calls(journal, "message:blocked") == ["a"]  # b never sees it
    # The connection stays open and usable.
    server.hooks.plugins[0].settings = RecorderSettings()
    await sender.send("normal", "allowed")
    assert (await other.recv_type("message"))["content"] == "allowed"


@pytest.mark.gen_test(timeout=10)
async def test_a_silent_veto_drops_without_an_error_frame(servers):
    journal: list = []
    server = await start(servers, journal, a={"veto_message": "silent"})
    client = await WsClient.connect(server.port)
    await client.send("normal", "gone")
    await client.nothing_for(0.3, kind="error")
    await client.nothing_for(0.1, kind="message")


@pytest.mark.gen_test(timeout=10)
async def test_a_veto_with_a_close_code_closes_after_the_error_frame(servers):
    journal: list = []
    server = await start(servers, journal, a={"veto_message": "close"})
    client = await WsClient.connect(server.port)
    await client.send("normal", "x")
    assert (await client.recv_type("error"))["message"] == "bye"
    assert await client.closed() == 1008


@pytest.mark.gen_test(timeout=10)
async def test_a_raising_on_message_costs_that_message_only(servers, caplog):
    journal: list = []
    server = await start(servers, journal, a={"raise_message": True})
    client = await WsClient.connect(server.port)
    with caplog.at_level(logging.ERROR):
        await client.send("normal", "boom")
        assert (await client.recv_type("error"))["code"] == "internal_error"
    assert any("plugin a: on_message failed" in r.getMessage() for r in caplog.records)
    server.hooks.plugins[0].settings = RecorderSettings()
    await client.send("normal", "fine")
    assert (await client.recv_type("message"))["content"] == "fine"


@pytest.mark.gen_test(timeout=10)
async def test_on_close_runs_in_reverse_order_even_if_one_raises(servers):
    journal: list = []
    server = await start(servers, journal, a={}, b={"raise_close": True}, c={})
    client = await WsClient.connect(server.port)
    client.close()
    await until(lambda: len(calls(journal, "close")) == 3)
    assert calls(journal, "close") == ["c", "b", "a"]
    assert len(server.hub) == 0


@pytest.mark.gen_test(timeout=10)
async def test_on_shutdown_runs_in_reverse_order_after_clients_are_closed(servers):
    journal: list = []
    server = await start(servers, journal, a={}, b={})
    client = await WsClient.connect(server.port)
    await server.stop(timeout=2)
    with pytest.raises(Closed):
        await client.recv()
    assert client.close_code == 1001
    assert calls(journal, "shutdown") == ["b", "a"]
    hooks = [what for _, what in journal]
    assert hooks.index("close") < hooks.index("shutdown")


def test_a_misspelt_hook_is_refused_when_the_plugin_is_defined():
    with pytest.raises(TypeError, match="on_conect is not a hook"):

        class Typo(Plugin):
            name = "typo"

            def on_conect(self, conn):
                pass


@pytest.mark.gen_test(timeout=10)
async def test_an_on_message_may_replace_the_message_for_later_hooks_and_the_broadcast(servers):
    journal: list = []
    server = await start(servers, journal, a={"rewrite": "[redacted]"}, b={})
    sender = await WsClient.connect(server.port)
    other = await WsClient.connect(server.port)
    await sender.send("normal", "my password is hunter2")
    assert (await other.recv_type("message"))["content"] == "[redacted]"
    assert calls(journal, "message:[redacted]") == ["b"]  # b saw the replacement


@pytest.mark.gen_test(timeout=10)
async def test_an_on_message_returning_neither_veto_nor_message_is_a_failure(servers, caplog):
    journal: list = []
    server = await start(servers, journal, a={"junk_message": True}, b={})
    client = await WsClient.connect(server.port)
    with caplog.at_level(logging.ERROR):
        await client.send("normal", "x")
        assert (await client.recv_type("error"))["code"] == "internal_error"
    assert any("plugin a: on_message failed" in r.getMessage() for r in caplog.records)
    assert calls(journal, "message:x") == ["a"]


@pytest.mark.gen_test(timeout=10)
async def test_a_raising_on_welcome_skips_only_its_own_part(servers, caplog):
    journal: list = []
    server = await start(servers, journal, a={"raise_welcome": True}, b={"welcome_note": "from b"})
    with caplog.at_level(logging.ERROR):
        client = await WsClient.connect(server.port)
        assert (await client.recv_type("note"))["text"] == "from b"  # b still ran
    assert any("plugin a: on_welcome failed" in r.getMessage() for r in caplog.records)
    await client.send("normal", "live")  # and the connection went live
    assert (await client.recv_type("message"))["content"] == "live"


@pytest.mark.gen_test(timeout=10)
async def test_on_pong_gets_each_answer_to_a_ping(servers):
    journal: list = []
    server = await start(servers, journal, a={})
    client = await WsClient.connect(server.port)
    (conn,) = server.hub.connections()
    conn.send(b"\x89\x04ping")  # a WebSocket ping; the client answers with a pong
    await until(lambda: calls(journal, "pong:ping"))
    assert client.close_code is None


def test_a_hook_with_the_wrong_arguments_is_refused_when_the_plugin_is_defined():
    with pytest.raises(TypeError) as error:

        class Forgetful(Plugin):
            def on_message(self, conn):
                return None

    assert "Forgetful.on_message(self, conn)" in str(error.value)
    assert "expected on_message(self, conn, message)" in str(error.value)


def test_a_hook_runner_checks_the_plugins_it_is_given():
    class Late(Plugin):
        pass

    Late.on_close = lambda self: None  # a hook patched in after the class was defined
    with pytest.raises(TypeError, match="expected on_close\\(self, conn\\)"):
        HookRunner([Late(Late.Settings(), None)])
