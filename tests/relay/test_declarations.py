"""The engine's vocabulary comes from what the configured plugin blocks declare."""

from __future__ import annotations

from relay.declarations import declarations
from tests.support import config as test_config

NO_CLASSES = {"critical": None, "normal": None, "status": None}  # None deletes in merge


def test_classes_and_channel_come_from_the_blocks_that_declare_them_enabled_or_not():
    settings = test_config.settings(
        {
            "plugins": {
                "priority": {"enabled": False, "classes": {**NO_CLASSES, "alert": 3}},
                "pubsub": {"enabled": False, "channel": "lobby"},
            }
        }
    )
    declared = declarations(settings)
    assert dict(declared.classes) == {"alert": 3} and declared.default_channel == "lobby"
    bare = declarations(test_config.settings({"plugins": {"priority": None, "pubsub": None}}))
    assert dict(bare.classes) == {"critical": 10, "normal": 5, "status": 1}
    assert bare.default_channel == "broadcast"
