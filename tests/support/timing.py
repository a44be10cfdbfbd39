"""Timeouts for tests, scaled by TEST_TIMEOUT_SCALE on slow machines."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * SCALE
