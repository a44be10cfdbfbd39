"""config.yaml -> `Settings`: the YAML read strictly, then every block validated.

The plugin blocks are validated by the Settings class each plugin declares; the loader
receives the plugin registry rather than importing it, so the configuration layer does
not depend on the plugins.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from core.config.environment import expand
from core.config.schema import ConfigError, build, describe, join, join_key, unknown_key
from core.config.settings import SECTIONS, ApiSettings, ChannelsSettings, Settings

EMPTY_FILE = "the file is empty (a server needs at least a plugins: block; plugins: {} runs none)"


def parse_settings(
    data: object, registry: Mapping[str, type], source: str = "config.yaml"
) -> Settings:
    """Validate already-parsed YAML data. Raises ConfigError naming `source`."""
    try:
        return _parse(data, registry, source)
    except ConfigError as error:
        raise error.in_file(source) from None


def _parse(data: object, registry: Mapping[str, type], source: str) -> Settings:
    if data is None:
        # An empty file would silently turn every feature off.
        raise ConfigError("", EMPTY_FILE)
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping at the top level, got {describe(data)}")
    known = [*SECTIONS, "channels", "api", "plugins"]
    for key in data:
        if key not in known:
            raise unknown_key("", key, known)
    sections = {name: build(cls, data.get(name), name) for name, cls in SECTIONS.items()}
    if "plugins" not in data:
        raise ConfigError(
            "plugins", "required key is missing (write plugins: {} to run with every feature off)"
        )
    plugins_data = data["plugins"]
    if plugins_data is None:
        plugins_data = {}
    if not isinstance(plugins_data, dict):
        raise ConfigError("plugins", f"expected a mapping, got {describe(plugins_data)}")
    plugins: dict[str, Any] = {}
    classes: dict[str, type] = {}
    for name, block in plugins_data.items():
        path = join_key("plugins", name)
        try:
            plugin_cls = registry.get(name) if isinstance(name, str) else None
        except LookupError as error:  # a package.module:ClassName that cannot be used
            raise ConfigError(path, str(error)) from None
        if plugin_cls is None:
            close = difflib.get_close_matches(str(name), list(registry), n=1)
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else f"known: {', '.join(registry)}; or package.module:ClassName of your own"
            )
            raise ConfigError(path, f"unknown plugin ({hint})")
        plugins[name] = build(plugin_cls.Settings, block, path)
        classes[name] = plugin_cls
    _check_requirements(plugins, classes)
    _check_declarations(plugins, classes)
    channels = None
    if "channels" in data:
        channels = build(ChannelsSettings, data["channels"], "channels")
    store = sections["store"]
    if sections["server"].workers > 1 and not store.uses_redis:
        raise ConfigError(
            "server.workers",
            f"{sections['server'].workers} workers need store.backend: redis (or a cluster or "
            f"sentinels) to share connections and limits; backend is {store.backend}",
        )
    return Settings(
        plugins=types.MappingProxyType(plugins),
        plugin_classes=types.MappingProxyType(classes),
        channels=channels,
        api=build(ApiSettings, data.get("api"), "api"),
        source=source,
        **sections,
    )


def _check_requirements(plugins: Mapping[str, Any], classes: Mapping[str, type]) -> None:
    """Each enabled plugin's `requires`: enabled, and listed before it."""
    enabled = [name for name, block in plugins.items() if block.enabled]
    for position, name in enumerate(enabled):
        for needed in getattr(classes[name], "requires", ()):
            if needed not in enabled[:position]:
                where = "listed after it" if needed in enabled else "not enabled"
                raise ConfigError(
                    join_key("plugins", name),
                    f"needs plugin '{needed}' enabled and listed before it ({where})",
                )


def _check_declarations(plugins: Mapping[str, Any], classes: Mapping[str, type]) -> None:
    """At most one block declares each piece of vocabulary (`Plugin.declare`)."""
    declared_by: dict[str, str] = {}
    for name, block in plugins.items():
        declared = classes[name].declare(block)
        if declared is None:
            continue
        for what in ("classes", "default_channel"):
            if getattr(declared, what) is None:
                continue
            if what in declared_by:
                raise ConfigError(
                    join_key("plugins", name),
                    f"declares {what.replace('_', ' ')}, as plugins.{declared_by[what]} does",
                )
            declared_by[what] = name


def load_settings(
    path: str,
    registry: Mapping[str, type],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, parse and validate `path`, with `${NAME}` values from `environ` (the process
    environment by default). `overrides` maps "section.key" to a value (from the command
    line); a bad override is reported as coming from the command line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise ConfigError("", f"cannot read the file: {error.strerror}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError("", f"cannot read the file: not UTF-8 text (line {line})", path) from None
    data = parse_yaml(text, path)
    if data is None:
        raise ConfigError("", EMPTY_FILE, path)
    try:
        data = expand(data, os.environ if environ is None else environ)
    except ConfigError as error:
        raise error.in_file(path) from None
    applied: set[str] = set()
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if data is None:
            data = {}
        if not isinstance(data, dict):
            break  # parse_settings reports the shape problem
        section, key = dotted.split(".")
        block = data.get(section)
        if block is None:
            block = data[section] = {}
        if isinstance(block, dict):
            block[key] = value
            applied.add(dotted)
    try:
        return _parse(data, registry, path)
    except ConfigError as error:
        problem = error.problem
        if error.path in applied:
            problem += " (given on the command line)"
        raise ConfigError(error.path, problem, path) from None


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader whose bad scalars (2024-02-30, !!int abc, a 5000-digit number, a bare
    !!bool) are YAML errors with a position, like every other mistake in the text,
    rather than whatever exception PyYAML's constructor happens to raise."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as error:  # PyYAML's constructors raise all kinds on odd input
            kind = node.tag.rsplit(":", 1)[-1]
            problem = f"cannot read this value as {kind}"
            if type(error) is ValueError and str(error):  # says what is wrong
                problem += f" ({str(error).split(';')[0]})"
            raise ConstructorError(None, None, problem, node.start_mark) from None


def _check_duplicates(loader: _Loader, root: Node) -> None:
    """Refuse a key written twice in one mapping, instead of silently keeping the last.

    Works on the node graph, before construction, so the error names the key path.
    Merge keys (<<) are YAML's way to share defaults and are not duplicates."""
    done: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in done:  # an alias seen before (aliases may even be recursive)
            continue
        done.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((item, join(path, i)) for i, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            lines: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue  # complex keys are refused when the mapping is built
                key = loader.construct_object(key_node, deep=True)
                where = join_key(path, key)
                line = key_node.start_mark.line + 1
                if key in lines:
                    lines_text = (
                        f"lines {lines[key]} and {line}" if lines[key] != line else f"line {line}"
                    )
                    raise ConfigError(where, f"duplicate key ({lines_text})")
                lines[key] = line
                stack.append((value_node, where))


def parse_yaml(text: str, source: str) -> object:
    """The data of YAML `text`, or a ConfigError naming `source` and where it went wrong."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(loader, node)
        return loader.construct_document(node)
    except ConfigError as error:
        raise error.in_file(source) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow
            where = f"line {text.count(chr(10), 0, error.position) + 1}: "
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        context = getattr(error, "context", None)
        if context and problem.startswith("but "):  # "expected X, but found Y"
            problem = f"{context}, {problem}"
        raise ConfigError("", f"invalid YAML: {where}{problem}", source) from None
    except RecursionError:
        raise ConfigError("", "invalid YAML: nested too deeply", source) from None
    finally:
        if loader is not None:
            loader.dispose()
