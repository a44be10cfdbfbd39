"""Values from the environment in config.yaml: `${NAME}` and `${NAME:-default}`.

After the YAML is parsed, every string value has its references replaced by the
variable's value (`:-` also applies when the variable is set but empty, as in a shell),
so secrets come from the environment (a systemd EnvironmentFile, a container's env)
rather than the file. A value that is exactly one reference is read as a YAML scalar, so
it may fill a number or boolean key and is checked as that type (`port: ${PORT:-8200}`).
A variable that is missing and has no default is a configuration error naming the key
and the variable. `$${` writes a literal `${`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from core.config.schema import ConfigError, join, join_key

REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
WHOLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(data: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """`data` with every `${...}` in its string values replaced from `environ`."""
    if isinstance(data, dict):
        return {key: expand(value, environ, join_key(path, key)) for key, value in data.items()}
    if isinstance(data, list):
        return [expand(value, environ, join(path, i)) for i, value in enumerate(data)]
    if isinstance(data, str) and "$" in data:
        return _expand_text(data, environ, path)
    return data


def _value(name: str, default: str | None, environ: Mapping[str, str], path: str) -> str:
    value = environ.get(name)
    if default is not None and not value:
        return default
    if value is None:
        raise ConfigError(
            path, f"environment variable {name} is not set (write ${{{name}:-default}} for one)"
        )
    return value


def _expand_text(text: str, environ: Mapping[str, str], path: str) -> Any:
    whole = WHOLE.fullmatch(text)
    if whole is not None:
        value = _value(whole.group(1), whole.group(2), environ, path)
        try:
            scalar = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            return value
        # Only numbers and booleans are read as YAML; anything else stays the text.
        return scalar if isinstance(scalar, (bool, int, float)) else value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$${":
            return "${"
        return _value(match.group(1), match.group(2), environ, path)

    return REFERENCE.sub(replace, text)
