"""The layout tells the architecture: imports go one way, and Tornado's internals stay in
one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each layer may import itself and the layers listed for it, nothing else of the project.
ALLOWED = {
    "core.wire": set(),
    "core.config": {"core.wire"},
    "core.access": set(),
    "core.transport": set(),
    "core.ops": {"core.config"},
    "core.stores": {"core.wire", "core.config", "core.ops"},
    "core.engine": {
        "core.wire",
        "core.config",
        "core.ops",
        "core.stores",
        "core.transport",
    },
    "plugins": {"core.wire", "core.config", "core.ops", "core.stores", "core.engine"},
    "handlers": {
        "core.wire",
        "core.config",
        "core.ops",
        "core.engine",
        "core.transport",
        "core.access",
    },
    "relay": {"core", "handlers", "plugins"},
}
PROJECT = ("core", "plugins", "handlers", "relay")

# Names that mean reaching into Tornado below its documented API.
TORNADO_INTERNALS = re.compile(
    r"ws_connection|WebSocketProtocol13|_WebSocketParams|_detach_stream|IOStream|"
    r"tornado\.iostream|\.stream\b"
)


def layer_of(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def sources() -> list[Path]:
    return [p for top in PROJECT for p in sorted((ROOT / top).rglob("*.py"))]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PROJECT}


def test_imports_go_one_way():
    wrong = []
    for path in sources():
        if module_name(path) == "core":
            continue  # the package's docstring
        own = layer_of(module_name(path))
        assert own is not None, f"{path} is in no layer"
        allowed = ALLOWED[own] | {own}
        for name in imported(path):
            target = layer_of(name)
            if target not in allowed and not any(
                target is not None and target.startswith(a + ".") for a in allowed
            ):
                wrong.append(f"{module_name(path)} imports {name}")
    assert wrong == []


def test_tornado_internals_appear_only_in_the_transport_module():
    found = []
    for path in [*sources(), ROOT / "server.py"]:
        if path == ROOT / "core" / "transport.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if TORNADO_INTERNALS.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
