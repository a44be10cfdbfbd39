"""A plugin from outside the tree, exactly as docs/plugins.md shows it: its own module,
named `module:ClassName` in config.yaml, validated like a built-in, no project file
edited. The page's code blocks are what runs here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import config as test_config
from tests.support.timing import scaled
from tests.support.ws_client import WsClient

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"


def example(name: str) -> str:
    """The code block of docs/plugins.md marked `<!-- example: name ...`."""
    text = DOC.read_text()
    marker = text.index(f"<!-- example: {name} ")
    start = text.index("```python\n", marker) + len("```python\n")
    return text[start : text.index("```", start)]


@pytest.fixture
def censor_dir(tmp_path: Path) -> Path:
    (tmp_path / "censor.py").write_text(example("censor.py"))
    (tmp_path / "test_censor.py").write_text(example("test_censor.py"))
    return tmp_path


def test_the_documented_tests_of_the_example_pass(censor_dir):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_censor.py"],
        check=False,
        cwd=censor_dir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=scaled(60),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


@pytest.mark.gen_test(timeout=30)
async def test_the_documented_plugin_filters_what_every_client_receives(censor_dir, processes):
    block = {"words": ["darn", "heck"], "max_length": 40}
    server = processes({"logging": {"level": "info"}, "plugins": {"censor:Censor": block}})
    assert "censor:Censor" in server.log()  # named among the plugins at start-up
    sender = await WsClient.connect(server.port)
    other = await WsClient.connect(server.port)
    await sender.send("normal", "Darn, what the heck")
    assert (await other.recv_type("message"))["content"] == "****, what the ****"
    await sender.send("normal", "x" * 41)
    assert (await sender.recv_type("error"))["code"] == "invalid_message"
    await sender.send("normal", "fine")
    assert (await other.recv_type("message"))["content"] == "fine"


def run_server(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            {"censor:Censor": {"wrods": ["darn"]}},
            "plugins.censor:Censor.wrods: unknown key (did you mean 'words'?)",
        ),
        (
            {"censor:Censor": {"max_length": 0}},
            "plugins.censor:Censor.max_length: must be at least 1, got 0",
        ),
        (
            {"censr:Censor": {}},
            "plugins.censr:Censor: cannot import 'censr': no module named 'censr' "
            "(it must be installed, on PYTHONPATH, or beside the config file)",
        ),
        ({"censor:Sensor": {}}, "plugins.censor:Sensor: module 'censor' has no 'Sensor'"),
        (
            {"censor:CensorSettings": {}},
            "plugins.censor:CensorSettings: 'CensorSettings' is not a plugin: "
            "subclass Plugin (from plugins import Plugin)",
        ),
    ],
)
def test_a_mistake_in_an_outside_plugins_block_is_a_config_error(censor_dir, block, expected):
    config = test_config.merge(test_config.baseline(), {"plugins": block})
    path = censor_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_server(path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {path}: {expected}"


def test_a_plugin_with_a_wrong_hook_signature_is_a_config_error(tmp_path):
    (tmp_path / "broken.py").write_text(
        "from plugins import Plugin\n\n\n"
        "class Broken(Plugin):\n"
        "    def on_message(self, message):\n"
        "        return None\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"plugins": {"broken:Broken": {}}}))
    result = run_server(path)
    assert result.returncode == 2, result.stderr
    assert "plugins.broken:Broken: cannot import 'broken': TypeError: " in result.stderr
    assert "expected on_message(self, conn, message)" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
