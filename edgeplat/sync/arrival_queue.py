"""The arrival queue: object-created notifications the batch arrival sensor reads instead of listing.

An ``ArrivalQueue`` hands out messages in bounded batches (``receive``) and forgets them only
when told (``ack``). The sensor acks a message once every object it names is settled in the
ledger, so a message whose run has not landed yet comes back (SQS: after its visibility
timeout; the local journal: likewise, from the reader's floor) and is checked again. A message
that cannot be read is poison: ``dead_letter`` records it with its reason and removes it, so it
never blocks the queue. Implementations: ``arrival_queue_sqs`` (S3 event notifications on
SQS) and ``arrival_queue_journal`` (the local store's journal); event bodies are parsed by
``object_events``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

DEFAULT_VISIBILITY_TIMEOUT_S = 300  # a message whose runs have not landed is checked again after this


class QueueUnavailable(RuntimeError):
    """The queue could not be reached after retries; the sensor falls back to listing."""


@dataclass(frozen=True, slots=True)
class ArrivalMessage:
    """One notification: the object keys it names (relative to the store), or why it is poison.

    ``keys`` is empty for notifications that name no new object (S3's test event, a removal, a
    key outside the store's prefix): those are acked at once. ``receipt`` is the queue's own
    handle for ``ack`` and is opaque to callers.
    """

    message_id: str
    receipt: Any
    keys: tuple[str, ...] = ()
    problem: str | None = None  # set for poison: why the body could not be read
    body: str = ""  # the raw body (truncated) for the dead-letter record
    receive_count: int = 1

    @property
    def poison(self) -> bool:
        return self.problem is not None


@runtime_checkable
class ArrivalQueue(Protocol):
    """A queue of object-created notifications (see the module docstring for the ack rules)."""

    url: str  # for messages and logs, no credentials

    def receive(self, max_messages: int) -> list[ArrivalMessage]:
        """Up to ``max_messages`` messages not acked and not in flight; raises ``QueueUnavailable``."""
        ...

    def ack(self, messages: Sequence[ArrivalMessage]) -> None:
        """Remove ``messages`` for good (their objects are settled)."""
        ...

    def dead_letter(self, messages: Sequence[ArrivalMessage]) -> None:
        """Record poison ``messages`` with their reasons where an operator finds them, then remove them."""
        ...

    def checkpoint(self) -> dict | None:
        """The reader's position to keep in the sensor cursor (None: the queue keeps it itself)."""
        ...

    def close(self) -> None: ...


def excerpt(body: str | bytes, limit: int = 2_000) -> str:
    """A body cut to ``limit`` characters for dead-letter records and logs."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text if len(text) <= limit else text[:limit] + "..."
