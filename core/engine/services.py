"""What the engine hands every plugin, and what plugins provide to the engine.

`Services` carries the instance's shared pieces (hub, stores, metrics, clocks). Its
slots are what the engine asks of features rather than reading their settings: the
outbound queue policy (provided by `priority`), the message log policy and the history
service (`history`), and the broker (`pubsub`). A slot has a default, at most one
provider at a time, and listeners that the composition root wires to the engine. When a
reload retires a plugin, everything it provided is withdrawn and the defaults come back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from core.engine.outbox import OutboxPolicy

if TYPE_CHECKING:
    from core.config.settings import Settings
    from core.engine.hub import Hub
    from core.ops.metrics import Metrics
    from core.stores.broker import Broker, LogPolicy
    from core.stores.factory import Stores
    from core.wire.entry import Entry

T = TypeVar("T")


@dataclass(frozen=True)
class Replay:
    """What a subscriber gets before live messages: past messages, oldest first, and,
    when it asked to recover from an id, whether they reach back to it."""

    entries: list[Entry]
    recovered: bool | None = None
    # The newest id of the channel the subscriber is caught up with once it has these
    # (None: not known). It is the subscriber's place in the channel until something
    # newer reaches it, so that a session resumed later gets what came after, even in a
    # channel where nothing was delivered meanwhile.
    through: str | None = None


class History(Protocol):
    """The history service (the `history` plugin provides it)."""

    async def replay(self, channel: str, since: str | None, budget: int) -> Replay:
        """`channel`'s messages after `since` (or its latest ones without it), whose
        frames take at most `budget` bytes together."""

    async def latest(self, channel: str, count: int) -> list[Entry]:
        """`channel`'s latest `count` messages (at most what the history keeps)."""


class Slot(Generic[T]):
    """Something the engine asks of features: a default, at most one provider."""

    def __init__(self, what: str, default: T) -> None:
        self.what = what
        self.default = default
        self.value = default
        self.owner: object | None = None
        self._listeners: list[Callable[[T], None]] = []

    def provide(self, value: T, owner: object) -> None:
        """`owner` provides `value` from now on (again, to change it)."""
        if self.owner is not None and self.owner is not owner:
            raise RuntimeError(
                f"{self.what} is already provided by {getattr(self.owner, 'name', self.owner)}"
            )
        self.owner = owner
        self._set(value)

    def withdraw(self, owner: object) -> bool:
        """`owner` no longer provides this: back to the default. False if it did not."""
        if self.owner is not owner:
            return False
        self.owner = None
        self._set(self.default)
        return True

    def watch(self, listener: Callable[[T], None]) -> None:
        """Call `listener(value)` whenever the value changes."""
        self._listeners.append(listener)

    def _set(self, value: T) -> None:
        self.value = value
        for listener in self._listeners:
            listener(value)


@dataclass
class Services:
    """The instance's hub, stores, metrics, identity and slots, shared by all plugins."""

    settings: Settings
    hub: Hub
    stores: Stores
    metrics: Metrics
    instance_id: str
    clock: Callable[[], float]  # monotonic seconds, for durations
    wall: Callable[[], float]  # epoch seconds, for timestamps
    queue_policy: Slot[OutboxPolicy] = field(
        default_factory=lambda: Slot("the outbound queue policy", OutboxPolicy(ordered=False))
    )
    log_policy: Slot[LogPolicy | None] = field(
        default_factory=lambda: Slot("the message log policy", None)
    )
    broker: Slot[Broker] = field(init=False)
    history: Slot[History | None] = field(default_factory=lambda: Slot("the history service", None))

    def __post_init__(self) -> None:
        self.broker = Slot("the broker", self.hub.broker)

    def slots(self) -> Iterator[Slot]:
        yield from (self.queue_policy, self.log_policy, self.broker, self.history)

    def withdraw(self, owner: object) -> None:
        """Everything `owner` provides goes back to its default."""
        for slot in self.slots():
            slot.withdraw(owner)
