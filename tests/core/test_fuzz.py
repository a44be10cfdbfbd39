"""Property tests: the frame parser, the config loader and the outbox under arbitrary input.

A client's frame and a user's config file are the two ways outsiders feed the server
data; whatever they send, the answer is a result or the one error type the caller
handles, never another exception. The outbox is checked against a reference model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.config.loader import parse_settings, parse_yaml
from core.config.schema import ConfigError
from core.config.settings import (
    LoggingSettings,
    ServerSettings,
    Settings,
    StoreSettings,
)
from core.engine.outbox import Outbox, OutboxPolicy
from core.wire import frames
from core.wire.channels import is_channel_name
from plugins import REGISTRY
from plugins.heartbeat import Tier

FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

CLASSES = dict(frames.DEFAULT_CLASSES)
CONTRACT_CODES = {
    frames.TOO_MANY_CONNECTIONS,
    frames.RATE_LIMITED,
    frames.INVALID_JSON,
    frames.INVALID_MESSAGE,
    frames.SLOW_CONSUMER,
    frames.INTERNAL_ERROR,
    frames.INVALID_CHANNEL,
    frames.TOO_MANY_CHANNELS,
    frames.NOT_SUBSCRIBED,
    frames.FORBIDDEN,
    frames.UNAUTHORIZED,
}


# -- the frame parser -----------------------------------------------------------------


def payload_of(frame: bytes) -> bytes:
    """The payload of one unmasked WebSocket frame."""
    n = frame[1] & 0x7F
    start = 2 if n < 126 else 4 if n == 126 else 10
    return frame[start:]


def parse_frame(data: str | bytes) -> frames.ClientMessage | frames.FrameError:
    """Parse; the outcome must be sendable: an error frame or a broadcast frame."""
    try:
        message = frames.parse_client_frame(data, CLASSES)
    except frames.FrameError as error:
        assert error.code in CONTRACT_CODES
        assert isinstance(error.message, str)
        assert error.message
        frame = frames.json_frame(frames.error_payload(error.code, error.message))
        assert json.loads(payload_of(frame))["code"] == error.code
        return error
    if isinstance(message, frames.ClientCommand):
        assert message.kind in frames.COMMANDS
        assert message.channel is None or is_channel_name(message.channel)
        return message
    assert isinstance(message, frames.ClientMessage)
    assert message.cls in CLASSES
    assert isinstance(message.content, str)
    channel = message.channel or "broadcast"
    assert is_channel_name(channel)
    tail = frames.message_tail(
        "c1", message.cls, CLASSES[message.cls], message.content, 1.5, channel=channel, user="u"
    )
    payload = frames.message_payload("1-0", tail)
    assert json.loads(payload)["content"] == message.content
    assert json.loads(payload)["channel"] == channel
    return message


# Lone surrogates are text a JSON string may hold but no UTF-8 frame can carry.
odd_text = st.text(
    st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010) | st.sampled_from("ab\x00\u2028"),
    max_size=6,
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(list(CLASSES))
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["type", "content"]) | st.text(max_size=8), inner, max_size=5
        )
    ),
    max_leaves=20,
)
client_objects = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(list(CLASSES)) | json_values,
        "content": st.text() | odd_text | json_values,
        "extra": json_values,
    },
)
JSON_ALPHABET = '{}[]":,.-+0123456789abcdefABCDEFtrulsn \\/u\n'
json_like_text = (
    st.text(alphabet=JSON_ALPHABET, max_size=60)
    | odd_text
    | st.builds(
        lambda prefix, obj, suffix: prefix + json.dumps(obj) + suffix,
        st.text(alphabet=JSON_ALPHABET, max_size=3),
        client_objects,
        st.text(alphabet=JSON_ALPHABET, max_size=3),
    )
)


@FUZZ
@given(st.text() | json_like_text)
def test_frame_parser_on_any_text(data):
    outcome = parse_frame(data)
    if isinstance(outcome, frames.FrameError):
        try:
            json.loads(data)
        except (ValueError, RecursionError):
            assert outcome.code == frames.INVALID_JSON
        else:
            assert outcome.code == frames.INVALID_MESSAGE


@FUZZ
@given(st.binary())
def test_frame_parser_refuses_every_binary_frame(data):
    outcome = parse_frame(data)
    assert isinstance(outcome, frames.FrameError)
    assert outcome.code == frames.INVALID_MESSAGE


def _sendable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@FUZZ
@given(client_objects | json_values, st.booleans())
def test_frame_parser_on_any_json_value(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    outcome = parse_frame(text)
    value = json.loads(text)  # what the server sees: a surrogate pair is one character
    valid = (
        isinstance(value, dict)
        and isinstance(value.get("type"), str)
        and value["type"] in CLASSES
        and isinstance(value.get("content"), str)
        and _sendable(value["content"])
    )
    if valid:
        assert outcome == frames.ClientMessage(value["type"], value["content"])
    else:
        assert isinstance(outcome, frames.FrameError)
        assert outcome.code == frames.INVALID_MESSAGE


@FUZZ
@given(st.integers(min_value=1, max_value=100_000), st.sampled_from(["[", "{", '{"a":']))
def test_frame_parser_on_deep_nesting(depth, opener):
    outcome = parse_frame(opener * depth)
    assert isinstance(outcome, frames.FrameError)
    assert outcome.code == frames.INVALID_JSON


# -- the config loader ----------------------------------------------------------------


def _field_names() -> list[str]:
    names = {"server", "store", "logging", "plugins", "enabled", "tiers", *REGISTRY}
    for cls in (ServerSettings, StoreSettings, LoggingSettings, Tier):
        names.update(cls.__dataclass_fields__)
    for plugin in REGISTRY.values():
        names.update(plugin.Settings.__dataclass_fields__)
    return sorted(names)


KEYS = _field_names()
config_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "memory",
            "redis",
            "auto",
            "json",
            "debug",
            "redis://127.0.0.1:6379/0",
            "https://example.com",
            "*",
            "10.0.0.0/8",
            "critical",
            "",
        ]
    )
)
config_keys = st.sampled_from(KEYS) | st.text(max_size=10) | st.integers() | st.none()
config_data = st.recursive(
    config_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(config_keys, inner, max_size=6),
    max_leaves=30,
)
# Mostly well-formed files with one or a few things wrong, so the search gets deep.
section_data = st.fixed_dictionaries(
    {},
    optional={
        "server": st.dictionaries(st.sampled_from(KEYS), config_data, max_size=4),
        "store": st.dictionaries(st.sampled_from(KEYS), config_data, max_size=3),
        "logging": st.dictionaries(st.sampled_from(KEYS), config_data, max_size=2),
        "plugins": st.dictionaries(
            st.sampled_from(sorted(REGISTRY)) | st.text(max_size=8),
            st.none() | st.dictionaries(st.sampled_from(KEYS), config_data, max_size=4),
            max_size=7,
        ),
    },
)


def check_config_outcome(load, result_type: type = Settings) -> object:
    try:
        result = load()
    except ConfigError as error:
        message = str(error)
        assert message.startswith("fuzz.yaml: ")
        assert "\n" not in message
        assert error.problem
        return error
    assert isinstance(result, result_type)
    return result


@FUZZ
@given(config_data | section_data)
def test_config_validation_on_any_data(data):
    outcome = check_config_outcome(lambda: parse_settings(data, REGISTRY, "fuzz.yaml"))
    if isinstance(outcome, Settings):
        assert isinstance(data, dict) or data is None
        assert set(outcome.plugins) <= set(REGISTRY)
        assert 0 <= outcome.server.port <= 65535
        for _, block in outcome.enabled_plugins():
            for value in vars(block).values():
                if isinstance(value, float):
                    assert math.isfinite(value)


YAML_ALPHABET = "abcsp:-_[]{}#&*!|>'\"%@`,?.~ \t\n0123456789eE+"
# Pieces of YAML that reach unusual corners of the parser and constructors.
YAML_FRAGMENTS = [
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: 2\n",
    "[" * 600,
    "{a: " * 400,
    "2024-02-30",
    "2001-12-14t21:59:43.10-25:00",
    "!!int twelve",
    "!!float x",
    "!!bool maybe",
    "!!binary ===",
    "!!timestamp 2024-13-01",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a: 1, a: 2]",
    "!!python/name:os.system",
    "9" * 5000,
    "0x" + "f" * 5000,
    "1" + "0" * 400,
    "1e400",
    ".inf",
    "-.inf",
    ".nan",
    "0o777",
    "0b101",
    "1_000",
    "190:20:30",
    "&a [*a]",
    "*undefined",
    "<<: {port: 1}",
    "<<: [1, 2]",
    "~",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "\x00",
    "\ufeff",
    "\x85",
    "\ud800",
    "\t",
    "'it''s'",
    '"\\x00"',
    '"\\ud800"',
    "|\n  text\n",
    "port: 1\nport: 2\n",
]
yaml_fragments = st.sampled_from(YAML_FRAGMENTS)


@FUZZ
@given(
    st.text()
    | st.text(alphabet=YAML_ALPHABET, max_size=80)
    | st.lists(yaml_fragments | st.text(alphabet=YAML_ALPHABET, max_size=5), max_size=6).map(
        "".join
    )
)
def test_yaml_parsing_on_any_text(text):
    check_config_outcome(lambda: parse_yaml(text, "fuzz.yaml"), object)


SHIPPED = (Path(__file__).resolve().parents[2] / "config.yaml").read_text()
edits = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=len(SHIPPED)),
        st.integers(min_value=0, max_value=12),
        st.text(alphabet=YAML_ALPHABET, max_size=6)
        | st.sampled_from(KEYS)
        | yaml_fragments
        | st.text(max_size=3),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(edits)
def test_loader_on_the_shipped_file_with_random_edits(changes):
    text = SHIPPED
    for at, cut, insert in changes:
        text = text[:at] + insert + text[at + cut :]

    def load():
        return parse_settings(parse_yaml(text, "fuzz.yaml"), REGISTRY, "fuzz.yaml")

    check_config_outcome(load)


@settings(FUZZ, max_examples=120)
@given(section_data, st.sampled_from(["block", "flow"]))
def test_whole_loader_on_dumped_yaml(data, style):
    try:
        text = yaml.safe_dump(
            data, default_flow_style=style == "flow", allow_unicode=True, sort_keys=False
        )
    except yaml.YAMLError:
        assume(False)
    # Only data that YAML carries faithfully (a "\x85" key, say, comes back changed).
    assume(repr(yaml.safe_load(text)) == repr(data))

    def load():
        return parse_settings(parse_yaml(text, "fuzz.yaml"), REGISTRY, "fuzz.yaml")

    outcome = check_config_outcome(load)
    direct = check_config_outcome(lambda: parse_settings(data, REGISTRY, "fuzz.yaml"))
    # The file says what the data says: the same settings or the same complaint.
    assert type(outcome) is type(direct)
    if isinstance(outcome, ConfigError):
        assert outcome.path == direct.path


# -- the outbox -----------------------------------------------------------------------


class Model:
    """The outbox's contract, slowly: over the limit, drop the oldest of the lowest."""

    def __init__(self, ordered: bool) -> None:
        self.ordered = ordered
        self.items: list[tuple[int, int]] = []  # (priority, arrival)

    def push(self, priority: int, arrival: int, limit: int) -> int:
        dropped = 0
        while len(self.items) > limit:
            self.items.remove(min(self.items))
            dropped += 1
        self.items.append((priority if self.ordered else 0, arrival))
        if len(self.items) > limit:
            self.items.remove(min(self.items))
            dropped += 1
        return dropped

    def pop(self) -> int:
        best = max(self.items, key=lambda item: (item[0], -item[1]))
        self.items.remove(best)
        return best[1]


priorities = st.integers(min_value=-3, max_value=3) | st.sampled_from([1 << 30, -(10**6)])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), priorities),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("limit"), st.integers(min_value=0, max_value=12)),
    ),
    max_size=80,
)


def run_outbox(ordered: bool, limit: int, ops: list) -> None:
    policy = OutboxPolicy(limit=limit, ordered=ordered)
    outbox: Outbox[int] = Outbox(policy, sizeof=lambda item: item % 7)
    model = Model(ordered)
    pushed = popped = dropped = 0
    for op, arg in ops:
        if op == "push":
            count = outbox.push(arg, pushed)
            assert count == model.push(arg, pushed, policy.limit)
            pushed += 1
            dropped += count
            assert len(outbox) <= policy.limit
        elif op == "pop":
            if not model.items:
                assert len(outbox) == 0
                continue
            assert outbox.pop() == model.pop()
            popped += 1
        else:
            policy.limit = arg  # a reload: takes effect from the next push
        assert len(outbox) == len(model.items)
        assert outbox.size == sum(arrival % 7 for _, arrival in model.items)
        assert pushed == popped + dropped + len(outbox)
        expected_top = max((p for p, _ in model.items), default=None)
        assert outbox.peek_priority() == expected_top
    # What remains comes out by (priority desc, arrival asc).
    rest = [outbox.pop() for _ in range(len(outbox))]
    assert rest == [arrival for _, arrival in sorted(model.items, key=lambda i: (-i[0], i[1]))]


@FUZZ
@given(st.integers(min_value=0, max_value=10), operations)
def test_outbox_against_the_model(limit, ops):
    run_outbox(True, limit, ops)


@FUZZ
@given(st.integers(min_value=0, max_value=10), operations)
def test_outbox_without_order_is_a_bounded_fifo(limit, ops):
    run_outbox(False, limit, ops)
    policy = OutboxPolicy(limit=max(limit, 1), ordered=False)
    outbox: Outbox[int] = Outbox(policy, sizeof=lambda item: 1)
    for arrival, (_, priority) in enumerate(op for op in ops if op[0] == "push"):
        outbox.push(priority, arrival)
    remaining = [outbox.pop() for _ in range(len(outbox))]
    assert remaining == sorted(remaining)
    pushes = sum(1 for op in ops if op[0] == "push")
    assert remaining == list(range(max(0, pushes - policy.limit), pushes))


# Text meant to look like the fields read by position: quotes, commas, field names.
# (No lone surrogates: a client's text arrives as UTF-8, which cannot carry them.)
tricky_text = st.lists(
    st.sampled_from(['"', ",", ":", "\\", "}", "x", '"ts":', ',"class":"', '","priority":'])
    | st.characters(exclude_categories=("Cs",)),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sender=tricky_text,
    user=st.none() | tricky_text,
    content=tricky_text,
    cls=st.sampled_from(list(CLASSES)),
    priority=st.integers(min_value=0, max_value=9),
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    channel=st.sampled_from(["broadcast", "room:a,b", "user:x.y@z"]),
    message_id=st.from_regex(r"\A[0-9]{1,13}-[0-9]{1,5}\Z"),
)
def test_a_message_frame_read_by_position_agrees_with_a_json_parser(  # noqa: PLR0917
    sender, user, content, cls, priority, ts, channel, message_id
):
    tail = frames.message_tail(sender, cls, priority, content, ts, channel=channel, user=user)
    payload = frames.message_payload(message_id, tail)
    parsed = json.loads(payload)
    assert frames.read_message_frame(payload) == (
        parsed["id"],
        parsed["priority"],
        parsed["class"],
        parsed["ts"],
    )


@given(junk=st.binary(max_size=80))
def test_anything_else_is_left_to_the_json_parser_or_read_consistently(junk):
    data = frames.MESSAGE_HEAD + junk
    fields = frames.read_message_frame(data)
    if fields is not None:  # it has every field where a message frame has it
        message_id, priority, cls, ts = fields
        assert isinstance(priority, int) and isinstance(ts, float) and isinstance(cls, str)
        assert data.startswith(frames.MESSAGE_HEAD + message_id.encode())
