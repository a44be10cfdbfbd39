"""`pip install .` makes a working server: its dependencies declared in ranges that the
pinned versions satisfy, the `relay` command, the browser client and the Lua scripts
installed with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from core.transport import SUPPORTED_TORNADO
from tests.support.ports import free_port
from tests.support.timing import scaled

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> dict[str, Requirement]:
    return {Requirement(r).name.lower(): Requirement(r) for r in PROJECT["dependencies"]}


def pinned() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "requirements.txt").read_text().splitlines():
        line = raw.split("#")[0].strip()
        if "==" in line:
            requirement = Requirement(line)
            pins[requirement.name.lower()] = str(requirement.specifier).removeprefix("==")
    return pins


def test_the_pinned_versions_satisfy_the_declared_ranges():
    ranges = declared()
    for name, version in pinned().items():
        if name == "cryptography":
            continue  # comes with PyJWT[crypto]
        assert name in ranges, f"{name} is pinned but not declared in pyproject.toml"
        assert Version(version) in ranges[name].specifier, f"{name}=={version}"


def test_the_tornado_range_is_the_transports():
    low, high = SUPPORTED_TORNADO
    spec = declared()["tornado"].specifier
    assert str(spec) in (f"<{high[0]}.{high[1]},>={low[0]}.{low[1]}",), str(spec)


@pytest.mark.timeout(120)
def test_pip_install_gives_a_relay_command_that_serves(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "tests", "bench", "*.pyc")
    )
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=scaled(90),
    )  # fmt: skip
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {port}}}\nstore: {{backend: memory}}\nplugins: {{}}\n")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    relay = subprocess.Popen(
        [sys.executable, str(target / "bin" / "relay"), "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        page = fetch(port, "/", relay)
        assert b"<html" in page.lower()
        assert b"relay.js" in fetch(port, "/static/app.js", relay)
        assert b"WebSocket" in fetch(port, "/static/relay.js", relay)
        assert b'"status": "ok"' in fetch(port, "/healthz", relay)
    finally:
        relay.terminate()
        output = relay.communicate(timeout=scaled(10))[0].decode()
    assert relay.returncode == 0, output
    assert str(ROOT) not in output  # it ran from the installed copy


def fetch(port: int, path: str, process: subprocess.Popen) -> bytes:
    deadline = time.monotonic() + scaled(15)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.read()
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling for the port to open
