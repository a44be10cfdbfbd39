"""config.yaml: every user mistake stops start-up with one ConfigError line naming the
file and the key path; the shipped file loads; flags override the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config.loader import load_settings, parse_settings
from core.config.schema import ConfigError
from core.config.settings import Settings
from core.engine.catalog import PluginCatalog
from core.engine.hooks import Declaration, Plugin
from plugins import BUILTINS, REGISTRY
from tests.support import config as test_config

ROOT = Path(__file__).resolve().parents[3]
ALL_PLUGINS = ["throttle", "ratelimit", "sessions", "pubsub", "history", "heartbeat", "priority"]


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str | bytes, overrides: dict | None = None) -> Settings:
    return load_settings(str(write(tmp_path, text)), REGISTRY, overrides)


def load_changes(tmp_path: Path, changes: dict, overrides: dict | None = None) -> Settings:
    data = test_config.merge(test_config.baseline(), changes)
    return load_text(tmp_path, yaml.safe_dump(data, sort_keys=False), overrides)


def error_of(load, *args) -> str:
    """The one-line message of the ConfigError that `load(*args)` raises."""
    with pytest.raises(ConfigError) as caught:
        load(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


def changes_error(tmp_path: Path, changes: dict) -> str:
    """The message without its file prefix, after checking the prefix is the file."""
    message = error_of(load_changes, tmp_path, changes)
    prefix = f"{tmp_path / 'config.yaml'}: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


def text_error(tmp_path: Path, text: str | bytes) -> str:
    message = error_of(load_text, tmp_path, text)
    prefix = f"{tmp_path / 'config.yaml'}: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


def plugin(name: str, **block) -> dict:
    return {"plugins": {name: block}}


# -- the shipped file and the plugin blocks -------------------------------------------


def test_shipped_config_loads_with_all_seven_plugins_in_order():
    settings = load_settings(str(ROOT / "config.yaml"), REGISTRY)
    assert [name for name, _ in settings.enabled_plugins()] == ALL_PLUGINS
    assert settings.server.port == 8200
    assert settings.server.max_message_size == 65536
    assert settings.server.shutdown_timeout == 5
    assert settings.store.backend == "auto"
    assert settings.store.key_prefix == "ws:"
    assert settings.plugin("ratelimit").max_messages_per_second == 5
    assert settings.plugin("history").replay == 20
    assert [(t.max_clients, t.interval) for t in settings.plugin("heartbeat").tiers] == [
        (1, 5),
        (2, 15),
        (None, 30),
    ]
    assert dict(settings.plugin("priority").classes) == {"critical": 10, "normal": 5, "status": 1}


@pytest.mark.parametrize("name", ALL_PLUGINS)
def test_enabled_false_turns_a_plugin_off(tmp_path, name):
    settings = load_changes(tmp_path, plugin(name, enabled=False))
    assert settings.plugin(name) is None
    assert name not in [n for n, _ in settings.enabled_plugins()]
    assert len(settings.enabled_plugins()) == 6
    # The block is still validated and readable (priority's classes are vocabulary).
    assert settings.plugins[name].enabled is False


@pytest.mark.parametrize("name", ALL_PLUGINS)
def test_deleting_a_plugin_block_turns_it_off(tmp_path, name):
    settings = load_changes(tmp_path, {"plugins": {name: None}})
    assert settings.plugin(name) is None
    assert name not in settings.plugins
    assert [n for n, _ in settings.enabled_plugins()] == [p for p in ALL_PLUGINS if p != name]


def test_an_empty_plugin_block_is_on_with_defaults(tmp_path):
    settings = load_text(tmp_path, "plugins:\n  ratelimit:\n")
    assert settings.plugin("ratelimit").max_messages_per_second == 5.0
    assert settings.plugin("ratelimit").burst == 5


@pytest.mark.parametrize("text", ["", "# nothing configured\n", "---\n", "~\n"])
def test_an_empty_file_is_refused(tmp_path, text):
    assert text_error(tmp_path, text) == (
        "the file is empty (a server needs at least a plugins: block; plugins: {} runs none)"
    )


def test_a_file_without_plugins_is_refused(tmp_path):
    assert text_error(tmp_path, "server: {port: 8300}\n") == (
        "plugins: required key is missing (write plugins: {} to run with every feature off)"
    )


def test_plugins_empty_means_defaults_and_no_plugins(tmp_path):
    settings = load_text(tmp_path, "plugins: {}\n")
    assert settings.enabled_plugins() == []
    assert settings.server.port == 8200
    assert settings.store.backend == "auto"


def test_yaml_anchors_and_merge_keys_are_allowed(tmp_path):
    settings = load_text(
        tmp_path,
        "plugins:\n"
        "  heartbeat:\n"
        "    tiers:\n"
        "      - &small {max_clients: 10, interval: 2}\n"
        "      - {<<: *small, max_clients: 20}\n"
        "      - {interval: 4}\n",
    )
    tiers = settings.plugin("heartbeat").tiers
    assert [(t.max_clients, t.interval) for t in tiers] == [(10, 2), (20, 2), (None, 4)]


# -- flags override the file ----------------------------------------------------------


def test_overrides_replace_the_files_values(tmp_path):
    settings = load_changes(
        tmp_path,
        {"server": {"port": 8200, "instance_id": "from-file", "host": "127.0.0.1"}},
        {
            "server.host": None,  # a flag not given leaves the file's value
            "server.port": 8300,
            "server.instance_id": "from-flag",
            "store.redis_url": "redis://10.1.2.3:6380/2",
        },
    )
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8300
    assert settings.instance_id == "from-flag"
    assert settings.store.redis_url == "redis://10.1.2.3:6380/2"


def test_overrides_apply_when_the_file_lacks_the_section(tmp_path):
    settings = load_text(tmp_path, "plugins: {}\n", {"server.port": 8301})
    assert settings.server.port == 8301


def test_a_bad_override_is_reported_as_coming_from_the_command_line(tmp_path):
    message = error_of(load_changes, tmp_path, {}, {"server.port": 70000})
    assert message.endswith(
        "config.yaml: server.port: must be at most 65535, got 70000 (given on the command line)"
    )


def test_default_instance_id_is_hostname_and_port(tmp_path):
    settings = load_changes(tmp_path, {"server": {"port": 8311}})
    assert settings.instance_id.endswith(":8311")


# -- reading the file -----------------------------------------------------------------


def test_missing_file(tmp_path):
    message = error_of(load_settings, str(tmp_path / "nope.yaml"), REGISTRY)
    assert message == f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory"


def test_a_directory_is_not_a_config_file(tmp_path):
    message = error_of(load_settings, str(tmp_path), REGISTRY)
    assert message == f"{tmp_path}: cannot read the file: Is a directory"


def test_file_that_is_not_utf8(tmp_path):
    assert text_error(tmp_path, b"server:\n  host: caf\xe9\n") == (
        "cannot read the file: not UTF-8 text (line 2)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server:\n  port: [8200\n",
            "invalid YAML: line 3, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        ("server:\n  port: 1\n   host: x\n", "invalid YAML: line 3, column 8: "),
        ("server:\n\tport: 8200\n", "invalid YAML: line 2, column 1: found character '\\t'"),
        ("server: {port: 1\n", "invalid YAML: line 2, column 1: "),
        ("a: 'open\n", "invalid YAML: line 2, column 1: found unexpected end of stream"),
        ("a: *nowhere\n", "invalid YAML: line 1, column 4: found undefined alias 'nowhere'"),
        ("a: !!python/object:os.system x\n", "invalid YAML: line 1, column 4: "),
        ("a: !!int twelve\n", "invalid YAML: line 1, column 4: cannot read this value"),
        ("a: 2024-02-30\n", "invalid YAML: line 1, column 4: cannot read this value"),
        ("a: " + "9" * 5000 + "\n", "invalid YAML: line 1, column 4: cannot read this value"),
        ("a: 1\n? [x, y]\n: 2\n", "invalid YAML: line 2, column 3: found unhashable key"),
        ("server:\n  host: a\x00b\n", "invalid YAML: line 2: unacceptable character #x0000"),
        ("[" * 100_000, "invalid YAML: nested too deeply"),
        (
            "a: 1\n---\nb: 2\n",
            "invalid YAML: line 2, column 1: expected a single document in the stream, "
            "but found another document",
        ),
    ],
)
def test_bad_yaml_names_line_and_column(tmp_path, text, expected):
    assert text_error(tmp_path, text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  port: 1\nserver:\n  port: 2\n", "server: duplicate key (lines 1 and 3)"),
        ("server:\n  port: 1\n  port: 2\n", "server.port: duplicate key (lines 2 and 3)"),
        (
            "plugins:\n  ratelimit: {burst: 1, burst: 2}\n",
            "plugins.ratelimit.burst: duplicate key (line 2)",
        ),
        (
            "plugins:\n  heartbeat:\n    tiers:\n      - {interval: 1}\n"
            "      - interval: 2\n        interval: 3\n",
            "plugins.heartbeat.tiers[1].interval: duplicate key (lines 5 and 6)",
        ),
        (
            "plugins:\n  priority:\n    classes: {critical: 10, critical: 1}\n",
            "plugins.priority.classes.critical: duplicate key (line 3)",
        ),
        # The same key spelled two ways by YAML (a number) is still the same key.
        ("a:\n  1: x\n  0x1: y\n", "a.1: duplicate key (lines 2 and 3)"),
    ],
)
def test_duplicate_keys_are_refused_with_their_path(tmp_path, text, expected):
    assert text_error(tmp_path, text) == expected


def test_top_level_must_be_a_mapping(tmp_path):
    assert text_error(tmp_path, "- server\n- store\n") == (
        "expected a mapping at the top level, got a list"
    )


# -- unknown keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sever": {}}, "sever: unknown key (did you mean 'server'?)"),
        ({"plugin": {}}, "plugin: unknown key (did you mean 'plugins'?)"),
        (
            {"zzz": 1},
            "zzz: unknown key (expected one of: server, store, logging, channels, api, plugins)",
        ),
        ({"server": {"prot": 8200}}, "server.prot: unknown key (did you mean 'port'?)"),
        (
            {"server": {"max_msg_size": 1}},
            "server.max_msg_size: unknown key (did you mean 'max_message_size'?)",
        ),
        (
            {"server": {"allowed_origin": []}},
            "server.allowed_origin: unknown key (did you mean 'allowed_origins'?)",
        ),
        ({"store": {"backnd": "memory"}}, "store.backnd: unknown key (did you mean 'backend'?)"),
        (
            {"store": {"redis-url": "redis://x"}},
            "store.redis-url: unknown key (did you mean 'redis_url'?)",
        ),
        ({"logging": {"levl": "info"}}, "logging.levl: unknown key (did you mean 'level'?)"),
        (
            plugin("throttle", max_connection_per_ip=3),
            "plugins.throttle.max_connection_per_ip: unknown key "
            "(did you mean 'max_connections_per_ip'?)",
        ),
        (
            plugin("ratelimit", max_message_per_second=3),
            "plugins.ratelimit.max_message_per_second: unknown key "
            "(did you mean 'max_messages_per_second'?)",
        ),
        (plugin("sessions", tll=5), "plugins.sessions.tll: unknown key (did you mean 'ttl'?)"),
        (
            plugin("pubsub", chanel="x"),
            "plugins.pubsub.chanel: unknown key (did you mean 'channel'?)",
        ),
        (
            plugin("history", replays=5),
            "plugins.history.replays: unknown key (did you mean 'replay'?)",
        ),
        (
            plugin("heartbeat", timout=5),
            "plugins.heartbeat.timout: unknown key (did you mean 'timeout'?)",
        ),
        (
            plugin("heartbeat", tiers=[{"interval": 5, "max_client": 3}]),
            "plugins.heartbeat.tiers[0].max_client: unknown key (did you mean 'max_clients'?)",
        ),
        (
            plugin("priority", queue_limt=5),
            "plugins.priority.queue_limt: unknown key (did you mean 'queue_limit'?)",
        ),
        (
            plugin("priority", enable=True),
            "plugins.priority.enable: unknown key (did you mean 'enabled'?)",
        ),
    ],
)
def test_unknown_keys_name_their_path_and_suggest(tmp_path, changes, expected):
    assert changes_error(tmp_path, changes) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server: {1: 2}\n", "server.1: unknown key (expected one of: "),
        ("server: {null: 2}\n", "server.null: unknown key (expected one of: "),
        ("plugins: {true: {}}\n", "plugins.true: unknown plugin (known: auth, throttle, "),
    ],
)
def test_keys_that_are_not_strings(tmp_path, text, expected):
    assert text_error(tmp_path, text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "plugins:\n  pubsub: {channel: null}\n",
            "plugins.pubsub.channel: expected a string, got null",
        ),
        ("plugins:\n  priority: {classes: {}}\n", "plugins.priority.classes: must not be empty"),
        (
            "plugins:\n  heartbeat: {tiers: null}\n",
            "plugins.heartbeat.tiers: expected a list, got null",
        ),
        ("plugins:\n  heartbeat: {tiers: []}\n", "plugins.heartbeat.tiers: must not be empty"),
        ("server: {port: null}\n", "server.port: expected an integer, got null"),
        ("server: {port: ~}\n", "server.port: expected an integer, got null"),
        ("store: {backend: }\n", "store.backend: expected one of memory, redis, auto, got null"),
    ],
)
def test_null_and_empty_values(tmp_path, text, expected):
    assert text_error(tmp_path, text) == expected


def test_unknown_key_without_a_close_match_lists_the_known_ones(tmp_path):
    assert changes_error(tmp_path, {"server": {"zebra": 1}}) == (
        "server.zebra: unknown key (expected one of: host, port, instance_id, "
        "max_message_size, max_queued_bytes, allowed_origins, trusted_proxies, ipv6_prefix, "
        "shutdown_timeout, handshake_timeout, workers, event_loop)"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ratelimiter", "plugins.ratelimiter: unknown plugin (did you mean 'ratelimit'?)"),
        (
            "presence",
            f"plugins.presence: unknown plugin (known: auth, {', '.join(ALL_PLUGINS)}; "
            "or package.module:ClassName of your own)",
        ),
    ],
)
def test_unknown_plugin(tmp_path, name, expected):
    assert changes_error(tmp_path, plugin(name, enabled=True)) == expected


# -- wrong types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            plugin("ratelimit", max_messages_per_second="lots"),
            "plugins.ratelimit.max_messages_per_second: expected a number, got 'lots'",
        ),
        (
            plugin("ratelimit", max_messages_per_second=True),
            "plugins.ratelimit.max_messages_per_second: expected a number, got true",
        ),
        (
            plugin("throttle", max_connections_per_ip=True),
            "plugins.throttle.max_connections_per_ip: expected an integer, got true",
        ),
        (
            plugin("throttle", max_connections_per_ip=2.5),
            "plugins.throttle.max_connections_per_ip: expected an integer, got 2.5",
        ),
        (
            plugin("throttle", enabled=1),
            "plugins.throttle.enabled: expected true or false, got 1",
        ),
        (
            plugin("sessions", enabled="no way"),
            "plugins.sessions.enabled: expected true or false, got 'no way'",
        ),
        ({"server": {"port": "8200"}}, "server.port: expected an integer, got '8200'"),
        ({"server": {"host": 127}}, "server.host: expected a string, got 127"),
        ({"server": {"instance_id": ["a"]}}, "server.instance_id: expected a string, got a list"),
        (
            {"server": {"allowed_origins": "https://a.example"}},
            "server.allowed_origins: expected a list, got 'https://a.example'",
        ),
        (
            {"server": {"trusted_proxies": {"a": 1}}},
            "server.trusted_proxies: expected a list, got a mapping",
        ),
        (
            {"server": {"trusted_proxies": [10]}},
            "server.trusted_proxies[0]: expected a string, got 10",
        ),
        (
            {"server": {"shutdown_timeout": "5s"}},
            "server.shutdown_timeout: expected a number, got '5s'",
        ),
        (
            {"server": {"shutdown_timeout": float("inf")}},
            "server.shutdown_timeout: expected a finite number, got inf",
        ),
        (
            plugin("history", ttl=10**400),
            "plugins.history.ttl: expected a finite number, got " + "1" + "0" * 36 + "...",
        ),
        ({"server": [1, 2]}, "server: expected a mapping, got a list"),
        ({"store": "redis"}, "store: expected a mapping, got 'redis'"),
        ({"plugins": ["throttle", "ratelimit"]}, "plugins: expected a mapping, got a list"),
        ({"plugins": False}, "plugins: expected a mapping, got false"),
        ({"plugins": {"throttle": 5}}, "plugins.throttle: expected a mapping, got 5"),
        (
            plugin("heartbeat", tiers={"interval": 5}),
            "plugins.heartbeat.tiers: expected a list, got a mapping",
        ),
        (plugin("heartbeat", tiers=[5]), "plugins.heartbeat.tiers[0]: expected a mapping, got 5"),
        (
            plugin("heartbeat", tiers=[{"interval": "often"}]),
            "plugins.heartbeat.tiers[0].interval: expected a number, got 'often'",
        ),
        (
            plugin("heartbeat", tiers=[{"interval": 5, "max_clients": True}]),
            "plugins.heartbeat.tiers[0].max_clients: expected an integer, got true",
        ),
        (
            plugin("priority", classes=["critical", "normal"]),
            "plugins.priority.classes: expected a mapping, got a list",
        ),
        (
            plugin("priority", classes={"critical": "high"}),
            "plugins.priority.classes.critical: expected an integer, got 'high'",
        ),
        (
            plugin("priority", classes={"critical": 1.5}),
            "plugins.priority.classes.critical: expected an integer, got 1.5",
        ),
        (
            plugin("priority", classes={7: 1}),
            "plugins.priority.classes.7: expected a string as key",
        ),
        (
            {"logging": {"level": "verbose"}},
            "logging.level: expected one of debug, info, warning, error, got 'verbose'",
        ),
        (
            {"logging": {"format": "xml"}},
            "logging.format: expected one of plain, json, got 'xml'",
        ),
    ],
)
def test_wrong_types_name_the_path_and_the_value(tmp_path, changes, expected):
    assert changes_error(tmp_path, changes) == expected


def test_yaml_spelling_of_booleans_and_numbers_is_understood(tmp_path):
    settings = load_text(
        tmp_path,
        "server: {shutdown_timeout: 2.5}\n"
        "plugins:\n  ratelimit: {enabled: yes, max_messages_per_second: 0.5, burst: 2}\n"
        "  throttle: {enabled: off}\n",
    )
    assert settings.server.shutdown_timeout == 2.5
    assert settings.plugin("ratelimit").max_messages_per_second == 0.5
    assert settings.plugin("throttle") is None


# -- values out of range --------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"server": {"port": -1}}, "server.port: must be at least 0, got -1"),
        ({"server": {"port": 65536}}, "server.port: must be at most 65535, got 65536"),
        (
            {"server": {"max_message_size": 0}},
            "server.max_message_size: must be at least 128, got 0",
        ),
        (
            {"server": {"shutdown_timeout": 0}},
            "server.shutdown_timeout: must be greater than 0, got 0",
        ),
        (
            {"server": {"shutdown_timeout": -1.5}},
            "server.shutdown_timeout: must be greater than 0, got -1.5",
        ),
        ({"server": {"instance_id": ""}}, "server.instance_id: must not be empty"),
        ({"server": {"host": ""}}, "server.host: must not be empty"),
        ({"store": {"instance_ttl": 120}}, "store.instance_ttl: must be at most 60, got 120"),
        ({"server": {"workers": 0}}, "server.workers: must be at least 1, got 0"),
        (
            {"server": {"workers": 2}, "store": {"backend": "auto"}},
            "server.workers: 2 workers need store.backend: redis (or a cluster or sentinels) "
            "to share connections and limits; backend is auto",
        ),
        (
            {"store": {"redis_cluster": ["127.0.0.1"]}},
            "store.redis_cluster[0]: expected host:port, got '127.0.0.1' (no host)",
        ),
        (
            {"store": {"redis_sentinels": ["h:0"], "backend": "redis"}},
            "store.redis_sentinels[0]: expected host:port, got 'h:0' "
            "(the port must be a number from 1 to 65535)",
        ),
        (
            {"store": {"redis_cluster": ["h:7001"], "redis_sentinels": ["h:26379"]}},
            "store.redis_sentinels: set redis_cluster or redis_sentinels, not both",
        ),
        (
            {"store": {"redis_cluster": ["h:7001"], "backend": "memory"}},
            "store.backend: memory, but redis_cluster is set (it needs backend: redis)",
        ),
        (
            {"store": {"redis_sentinels": ["h:26379"], "backend": "auto"}},
            "store.redis_sentinel_master: required with redis_sentinels: the name the "
            "sentinels monitor",
        ),
        (
            plugin("throttle", max_connections_per_ip=0),
            "plugins.throttle.max_connections_per_ip: must be at least 1, got 0",
        ),
        (
            plugin("ratelimit", max_messages_per_second=0),
            "plugins.ratelimit.max_messages_per_second: must be greater than 0, got 0",
        ),
        (
            plugin("ratelimit", max_messages_per_second=-5),
            "plugins.ratelimit.max_messages_per_second: must be greater than 0, got -5",
        ),
        (plugin("ratelimit", burst=0), "plugins.ratelimit.burst: must be at least 1, got 0"),
        (plugin("sessions", ttl=0), "plugins.sessions.ttl: must be greater than 0, got 0"),
        (plugin("pubsub", channel=""), "plugins.pubsub.channel: must not be empty"),
        (plugin("history", size=0), "plugins.history.size: must be at least 1, got 0"),
        (plugin("history", ttl=-1), "plugins.history.ttl: must be greater than 0, got -1"),
        (plugin("history", replay=-1), "plugins.history.replay: must be at least 0, got -1"),
        (
            plugin("history", size=10, replay=11),
            "plugins.history.replay: must be at most size (10), got 11",
        ),
        (
            plugin("heartbeat", timeout=0),
            "plugins.heartbeat.timeout: must be greater than 0, got 0",
        ),
        (
            plugin("heartbeat", tiers=[{"interval": 0}]),
            "plugins.heartbeat.tiers[0].interval: must be greater than 0, got 0",
        ),
        (
            plugin("heartbeat", tiers=[{"interval": 5, "max_clients": -1}, {"interval": 9}]),
            "plugins.heartbeat.tiers[0].max_clients: must be at least 0, got -1",
        ),
        (
            plugin("priority", queue_limit=0),
            "plugins.priority.queue_limit: must be at least 1, got 0",
        ),
        (
            plugin("priority", classes={"  ": 1}),
            "plugins.priority.classes.  : a class name must not be empty",
        ),
        (
            plugin("priority", classes={"critical": 10_000_000}),
            "plugins.priority.classes.critical: must be between -1000000 and 1000000, got 10000000",
        ),
    ],
)
def test_values_out_of_range(tmp_path, changes, expected):
    assert changes_error(tmp_path, changes) == expected


# -- heartbeat tiers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        ([], "plugins.heartbeat.tiers: must not be empty"),
        (
            [{"max_clients": 1}],
            "plugins.heartbeat.tiers[0].interval: required key is missing",
        ),
        (
            [{"max_clients": 1, "interval": 5}, {}],
            "plugins.heartbeat.tiers[1].interval: required key is missing",
        ),
        (
            [{"max_clients": 5, "interval": 1}, {"max_clients": 2, "interval": 2}, {"interval": 3}],
            "plugins.heartbeat.tiers[1].max_clients: tiers must be in increasing max_clients "
            "order, got 2 after 5",
        ),
        (
            [{"max_clients": 2, "interval": 1}, {"max_clients": 2, "interval": 2}],
            "plugins.heartbeat.tiers[1].max_clients: tiers must be in increasing max_clients "
            "order, got 2 after 2",
        ),
        (
            [{"interval": 5}, {"max_clients": 2, "interval": 6}],
            "plugins.heartbeat.tiers[0].max_clients: only the last tier may leave out max_clients",
        ),
    ],
)
def test_bad_heartbeat_tiers(tmp_path, tiers, expected):
    assert changes_error(tmp_path, plugin("heartbeat", tiers=tiers)) == expected


def test_good_heartbeat_tiers(tmp_path):
    settings = load_changes(
        tmp_path,
        plugin(
            "heartbeat",
            tiers=[{"max_clients": 0, "interval": 0.5}, {"max_clients": 9, "interval": 7}],
        ),
    )
    assert [(t.max_clients, t.interval) for t in settings.plugin("heartbeat").tiers] == [
        (0, 0.5),
        (9, 7.0),
    ]


# -- addresses, origins, store ---------------------------------------------------------


@pytest.mark.parametrize(
    "entry", ["not-an-ip", "10.0.0.0/33", "300.1.1.1", "", "10.0.0.1, 10.0.0.2"]
)
def test_bad_trusted_proxy(tmp_path, entry):
    assert changes_error(tmp_path, {"server": {"trusted_proxies": ["127.0.0.1", entry]}}) == (
        f"server.trusted_proxies[1]: expected an IP address or network, got {entry!r}"
    )


def test_good_trusted_proxies(tmp_path):
    proxies = ["10.0.0.0/8", "192.168.1.5", "::1", "fd00::/8", "10.1.2.3/8"]
    settings = load_changes(tmp_path, {"server": {"trusted_proxies": proxies}})
    assert settings.server.trusted_proxies == tuple(proxies)


@pytest.mark.parametrize(
    "entry",
    [
        "example.com",
        "https://",
        "https://example.com/app",
        "https://example.com?x=1",
        "https://user@example.com",
        "https://example.com:port",
        "",
        "**",
    ],
)
def test_bad_allowed_origin(tmp_path, entry):
    assert changes_error(tmp_path, {"server": {"allowed_origins": [entry]}}) == (
        "server.allowed_origins[0]: expected an origin like 'https://example.com' or '*', "
        f"got {entry!r}"
    )


def test_good_allowed_origins(tmp_path):
    origins = ["https://app.example.com", "http://localhost:8080", "https://example.com/", "*"]
    settings = load_changes(tmp_path, {"server": {"allowed_origins": origins}})
    assert settings.server.allowed_origins == tuple(origins)


@pytest.mark.parametrize(
    ("backend", "shown"),
    [("postgres", "'postgres'"), ("Redis", "'Redis'"), ("", "''"), (1, "1"), (True, "true")],
)
def test_bad_store_backend(tmp_path, backend, shown):
    assert changes_error(tmp_path, {"store": {"backend": backend}}) == (
        f"store.backend: expected one of memory, redis, auto, got {shown}"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "", "redis:/x"])
def test_bad_redis_url_scheme(tmp_path, url):
    assert changes_error(tmp_path, {"store": {"redis_url": url}}) == (
        f"store.redis_url: expected a redis://, rediss:// or unix:// URL, got {url!r}"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:abc/0", "Port could not be cast to integer value as 'abc'"),
        ("redis://127.0.0.1:70000/0", "Port out of range 0-65535"),
        ("redis://127.0.0.1:6379/zero", "the database number must be a number, got 'zero'"),
        ("redis://127.0.0.1:6379/0?db=x", "Invalid value for 'db' in connection URL"),
        ("unix://", "a unix:// URL needs a socket path (unix:///path/to/redis.sock)"),
    ],
)
def test_redis_url_the_store_could_not_use(tmp_path, url, problem):
    assert changes_error(tmp_path, {"store": {"redis_url": url}}) == (
        f"store.redis_url: not a usable Redis URL: {problem}"
    )


def test_a_redis_url_error_does_not_show_the_password(tmp_path):
    message = changes_error(tmp_path, {"store": {"redis_url": "redis://u:s3cret@h:x/0"}})
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://cache.example:6380/1",
        "redis://u:p@[::1]/3",
        "unix:///var/run/redis/redis.sock",
        "unix:///var/run/redis/redis.sock?db=2",
    ],
)
def test_good_redis_urls(tmp_path, url):
    assert load_changes(tmp_path, {"store": {"redis_url": url}}).store.redis_url == url


def test_a_mistake_in_a_disabled_block_is_still_an_error(tmp_path):
    assert changes_error(tmp_path, plugin("ratelimit", enabled=False, burst=0)) == (
        "plugins.ratelimit.burst: must be at least 1, got 0"
    )


# -- plugins that need others, and vocabulary declared by plugin blocks ---------------


class NeedsSessions(Plugin):
    requires = ("sessions",)


class AlsoDeclaresClasses(Plugin):
    @classmethod
    def declare(cls, settings):
        return Declaration(classes={"shout": 1})


def with_plugin(name: str, plugin: type[Plugin]) -> PluginCatalog:
    return PluginCatalog({**BUILTINS, name: plugin})


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"sessions": {"enabled": False}, "needy": {}}, "not enabled"),
        ({"sessions": None, "needy": {}}, "not enabled"),
    ],
)
def test_a_plugin_that_needs_another_is_refused_without_it(changes, why):
    with pytest.raises(ConfigError) as caught:
        test_config.settings({"plugins": changes}, with_plugin("needy", NeedsSessions))
    assert str(caught.value) == (
        f"test.yaml: plugins.needy: needs plugin 'sessions' enabled and listed before it ({why})"
    )


def test_a_plugin_that_needs_another_listed_after_it_is_refused():
    data = test_config.baseline()
    data["plugins"] = {"needy": {}, **data["plugins"]}  # needy first, sessions later
    with pytest.raises(ConfigError, match=r"needs plugin 'sessions' .* \(listed after it\)"):
        parse_settings(data, with_plugin("needy", NeedsSessions), "test.yaml")
    data["plugins"] = {**test_config.baseline()["plugins"], "needy": {}}
    assert parse_settings(data, with_plugin("needy", NeedsSessions)).plugins["needy"].enabled


def test_two_blocks_declaring_the_message_classes_are_refused():
    with pytest.raises(ConfigError) as caught:
        test_config.settings({"plugins": {"loud": {}}}, with_plugin("loud", AlsoDeclaresClasses))
    assert (
        str(caught.value) == "test.yaml: plugins.loud: declares classes, as plugins.priority does"
    )


# -- channels -------------------------------------------------------------------------


def test_the_shipped_config_has_channels_with_rooms_and_personal_channels():
    settings = load_settings(str(ROOT / "config.yaml"), REGISTRY)
    channels = settings.channels
    assert channels.default == "broadcast" and channels.max_per_connection == 64
    assert channels.namespaces["room"].presence and channels.namespaces["user"].personal
    assert channels.namespaces["room"].publish == "subscribers"


def test_without_a_channels_block_there_is_none():
    assert test_config.settings().channels is None


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            {"namespaces": {"ro om": {}}},
            "channels.namespaces.ro om: a namespace is a channel name without ':' "
            "(letters, digits, _.@-)",
        ),
        (
            {"default": "room:lobby", "namespaces": {"default": {}}},
            "channels.default: its namespace 'room' is not listed in namespaces",
        ),
        (
            {"default": "user:x", "namespaces": {"user": {"personal": True}}},
            "channels.default: its namespace 'user' is personal",
        ),
        (
            {"namespaces": {"default": {"personal": True}}},
            "channels.namespaces.default.personal: the default namespace cannot be personal",
        ),
        (
            {"default": "a b"},
            "channels.default: not a channel name ([A-Za-z0-9_.:@-], 1-128): 'a b'",
        ),
        (
            {"namespaces": {"room": {"publish": "everyone"}}},
            "channels.namespaces.room.publish: expected one of any, subscribers, none, "
            "got 'everyone'",
        ),
        ({"max_per_connection": 0}, "channels.max_per_connection: must be at least 1, got 0"),
    ],
)
def test_channel_block_mistakes(tmp_path, block, expected):
    assert changes_error(tmp_path, {"channels": block}) == expected


def test_no_default_channel_is_allowed():
    assert test_config.settings({"channels": {"default": None}}).channels.default is None


@pytest.mark.parametrize("name", ["subscribe", "unsubscribe", "presence", "refresh"])
def test_a_class_named_like_a_request_is_refused(tmp_path, name):
    changes = {"plugins": {"priority": {"classes": {name: 3}}}}
    assert changes_error(tmp_path, changes) == (
        f"plugins.priority.classes.{name}: '{name}' is a request type of the protocol, not a class"
    )


# -- values from the environment ------------------------------------------------------


def load_env(tmp_path: Path, text: str, environ: dict) -> Settings:
    return load_settings(str(write(tmp_path, text)), REGISTRY, None, environ)


def test_values_come_from_the_environment_with_defaults(tmp_path):
    text = (
        "server:\n"
        "  instance_id: ${NODE:-left}\n"
        "  port: ${PORT:-8200}\n"
        '  allowed_origins: ["https://${DOMAIN}"]\n'
        "store: {redis_url: 'redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0', key_prefix: 'a$${b}'}\n"
        "plugins:\n"
        "  ratelimit: {enabled: '${LIMITS:-true}', max_messages_per_second: '${RATE:-2.5}'}\n"
    )
    settings = load_env(tmp_path, text, {"DOMAIN": "app.example.com", "REDIS_PASSWORD": "s3"})
    assert settings.server.instance_id == "left"
    assert settings.server.port == 8200
    assert settings.server.allowed_origins == ("https://app.example.com",)
    assert settings.store.redis_url == "redis://:s3@127.0.0.1:6379/0"
    assert settings.store.key_prefix == "a${b}"  # $${ is a literal ${
    ratelimit = settings.plugins["ratelimit"]
    assert ratelimit.enabled is True and ratelimit.max_messages_per_second == 2.5
    env = {"DOMAIN": "x.org", "REDIS_PASSWORD": "p", "NODE": "right", "PORT": "8300", "LIMITS": ""}
    again = load_env(tmp_path, text, env)
    assert (again.server.instance_id, again.server.port) == ("right", 8300)
    assert again.plugins["ratelimit"].enabled is True  # set but empty: the default


def test_a_missing_variable_names_the_key_and_the_variable(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_env(tmp_path, "plugins: {}\nserver: {instance_id: '${NODE}'}\n", {})
    assert str(caught.value).endswith(
        "config.yaml: server.instance_id: environment variable NODE is not set "
        "(write ${NODE:-default} for one)"
    )


def test_a_variable_filling_a_number_is_checked_as_one(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_env(tmp_path, "plugins: {}\nserver: {port: '${PORT}'}\n", {"PORT": "eighty"})
    assert str(caught.value).endswith("server.port: expected an integer, got 'eighty'")
