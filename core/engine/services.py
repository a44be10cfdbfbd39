"""What the core hands every plugin: the shared pieces, built once in the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config.settings import Settings
    from core.engine.hub import Hub
    from core.ops.metrics import Metrics
    from core.stores.factory import Stores


@dataclass
class Services:
    """The instance's hub, stores, metrics and identity, shared by all plugins."""

    settings: Settings
    hub: Hub
    stores: Stores
    metrics: Metrics
    instance_id: str
    clock: Callable[[], float]  # monotonic seconds, for durations
    wall: Callable[[], float]  # epoch seconds, for timestamps
