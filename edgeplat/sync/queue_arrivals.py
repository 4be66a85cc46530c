"""The batch arrival sensor's planner when notifications drive it: queue first, listing as backstop.

One tick (:func:`plan_tick`):

1. receives at most ``max_messages`` notifications from the arrival queue;
2. asks the ledger which named objects are settled; a message whose objects are all settled
   (or that names none) is acked, a poison message is dead-lettered with its reason, and the
   rest stay unacked: their unsettled keys become ingest runs, and the message comes back after
   the queue's visibility timeout to be checked again. So a message is deleted only once its
   objects are in the ledger, on a later tick than the one that requested their run; a
   duplicate notification is acked with its twin, and order does not matter (runs are planned
   from the set of keys, with run keys hashed from the sorted keys);
3. when the backstop is due (every ``backstop_interval_s``, at once after a journal restart,
   and on every tick while the queue is unreachable), lists one bounded page of the store after
   the listing cursor (``edgeplat.sync.arrivals.plan_arrivals``) and plans what the ledger lacks:
   a lost notification is found there. The listing covers the hot prefix only, which holds the
   backlog once settled objects move to the archive prefix, so its cost grows with arrivals.

The cursor is JSON with a version field: ``{"v": 2, "listing": <listing cursor's after>,
"journal": <journal reader position or null>, "backstop_due": <epoch s>}``; a version 1
(listing only) cursor is read as a listing position.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge_sync.batch_keys import BATCH_PREFIX, BATCH_SUFFIX
from edge_sync.objectstore import ObjectStore
from edgeplat.sync.arrival_queue import ArrivalMessage, ArrivalQueue, QueueUnavailable
from edgeplat.sync.arrivals import (
    CURSOR_VERSION as LISTING_CURSOR_VERSION,
)
from edgeplat.sync.arrivals import (
    DEFAULT_KEYS_PER_RUN,
    ArrivalCursor,
    CursorError,
    PlannedRun,
    plan_arrivals,
    plan_runs,
)

QUEUE_CURSOR_VERSION = 2
DEFAULT_MAX_MESSAGES = 1_000
DEFAULT_BACKSTOP_KEYS = 5_000
DEFAULT_BACKSTOP_INTERVAL_S = 600.0

Settled = Callable[[list[str]], set[str]]


def is_hot_batch(key: str) -> bool:
    """A batch key under the hot prefix; anything else a notification names (desired-state documents,
    objects moved to the archive prefix) is acked without a run."""
    return key.startswith(BATCH_PREFIX) and key.endswith(BATCH_SUFFIX)


@dataclass(frozen=True)
class QueueCursor:
    """The sensor's position: the backstop listing's cursor, the journal reader's, the next backstop."""

    listing: ArrivalCursor = ArrivalCursor()
    journal: dict | None = None
    backstop_due: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": QUEUE_CURSOR_VERSION,
                "listing": self.listing.after,
                "journal": self.journal,
                "backstop_due": self.backstop_due,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> QueueCursor:
        if not text:
            return cls()
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("v") == LISTING_CURSOR_VERSION:
            return cls(ArrivalCursor.from_json(text))  # from listing-only days
        if not isinstance(doc, dict) or doc.get("v") != QUEUE_CURSOR_VERSION:
            raise CursorError(
                f"sensor cursor {text[:80]!r} is not version {QUEUE_CURSOR_VERSION}; reset the sensor's "
                "cursor (the listing backstop and reconciliation ingest anything a reset skips over)"
            )
        listing, journal, due = doc.get("listing"), doc.get("journal"), doc.get("backstop_due", 0.0)
        if listing is not None and not isinstance(listing, str):
            raise CursorError(f"sensor cursor 'listing' must be a key or null, got {listing!r}")
        if journal is not None and not isinstance(journal, dict):
            raise CursorError(f"sensor cursor 'journal' must be an object or null, got {journal!r}")
        if not isinstance(due, int | float):
            raise CursorError(f"sensor cursor 'backstop_due' must be a number, got {due!r}")
        return cls(ArrivalCursor(listing), journal, float(due))


@dataclass(frozen=True)
class MessagePlan:
    """What a batch of messages asks for: keys to ingest, and which messages to ack or dead-letter."""

    fresh: frozenset[str]  # batch keys named and not settled
    ack: list[ArrivalMessage]  # every named object settled (or none named)
    poison: list[ArrivalMessage]
    pending: list[ArrivalMessage]  # their runs are requested; acked on a later tick
    keys: int  # distinct batch keys named
    settled: int


class TickLedger:
    """``settled(keys)`` asked at most once per key in a tick: the messages' keys and the backstop
    listing's overlap (a batch both notified and listed), and the ledger lookup dominates a tick."""

    def __init__(self, settled: Settled) -> None:
        self._settled, self._known, self._asked = settled, set[str](), set[str]()
        self.calls = 0

    def __call__(self, keys: list[str]) -> set[str]:
        ask = [k for k in keys if k not in self._asked]
        if ask:
            self.calls += 1
            self._known |= self._settled(ask)
            self._asked.update(ask)
        return {k for k in keys if k in self._known}


def plan_messages(messages: Sequence[ArrivalMessage], settled: Settled) -> MessagePlan:
    """Sort received messages into ack / dead-letter / pending by what the ledger holds."""
    poison = [m for m in messages if m.poison]
    readable = [m for m in messages if not m.poison]
    named = sorted({k for m in readable for k in m.keys if is_hot_batch(k)})
    known = settled(named) if named else set()
    ack, pending = [], []
    for m in readable:
        waiting = [k for k in m.keys if is_hot_batch(k) and k not in known]
        (pending if waiting else ack).append(m)
    fresh = frozenset(k for k in named if k not in known)
    return MessagePlan(fresh, ack, poison, pending, len(named), len(known))


@dataclass
class TickPlan:
    """A tick's outcome: runs to request, the next cursor, and what happened (for logs and skips)."""

    runs: list[PlannedRun]
    cursor: QueueCursor
    received: int = 0
    acked: int = 0
    pending: int = 0
    poison: list[ArrivalMessage] = field(default_factory=list)
    outage: str | None = None  # the queue was unreachable: this tick listed instead
    backstop_listed: int | None = None  # keys the backstop listed (None: it did not run)
    backstop_found: int = 0  # unsettled keys only the backstop found (lost notifications)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{self.received} notifications ({self.acked} acked, {self.pending} pending, {len(self.poison)} poison)"
        ]
        if self.outage:
            parts.insert(0, f"arrival queue unavailable, fell back to listing: {self.outage}")
        if self.backstop_listed is not None:
            parts.append(
                f"backstop listed {self.backstop_listed} keys, found {self.backstop_found} unnotified"
            )
        parts += self.notes
        parts.append(f"{len(self.runs)} runs")
        return "; ".join(parts)


def plan_tick(
    store: ObjectStore,
    open_queue: Callable[[dict | None], ArrivalQueue] | None,
    cursor: QueueCursor,
    *,
    settled: Settled,
    now: float,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    backstop_keys: int = DEFAULT_BACKSTOP_KEYS,
    backstop_interval_s: float = DEFAULT_BACKSTOP_INTERVAL_S,
    keys_per_run: int = DEFAULT_KEYS_PER_RUN,
) -> TickPlan:
    """One sensor tick (see the module docstring). ``open_queue(journal_position)`` opens the
    queue (None: no queue configured, listing only); ``settled(keys)`` asks the ledger."""
    plan = TickPlan([], cursor)
    settled = TickLedger(settled)
    fresh: set[str] = set()
    journal, due = cursor.journal, cursor.backstop_due
    if open_queue is not None:
        try:
            queue = open_queue(cursor.journal)
        except QueueUnavailable as exc:
            plan.outage = str(exc)
        else:
            try:
                messages = queue.receive(max_messages)
                mp = plan_messages(messages, settled)
                fresh |= mp.fresh
                plan.received, plan.pending, plan.poison = len(messages), len(mp.pending), mp.poison
                try:
                    queue.dead_letter(mp.poison)
                    queue.ack(mp.ack)
                    plan.acked = len(mp.ack)
                except QueueUnavailable as exc:  # they come back and are acked on a later tick
                    plan.notes.append(f"acks deferred: {exc}")
                journal = queue.checkpoint()
                restarted = getattr(queue, "restarted", None)
                if restarted:
                    plan.notes.append(f"{restarted}; the listing backstop runs now")
                    due = now
            except QueueUnavailable as exc:
                plan.outage = str(exc)
            finally:
                queue.close()
    listing = cursor.listing
    if open_queue is None or plan.outage is not None or now >= due:
        lp = plan_arrivals(store, listing, max_keys=backstop_keys, keys_per_run=keys_per_run, settled=settled)
        listed_fresh = {k for r in lp.runs for k in r.keys}
        plan.backstop_listed, plan.backstop_found = lp.listed, len(listed_fresh - fresh)
        fresh |= listed_fresh
        listing = lp.cursor
        if lp.caught_up and plan.outage is None:
            due = now + backstop_interval_s  # a pass ended: the next one after the interval
    plan.runs = plan_runs(fresh, keys_per_run)
    plan.cursor = QueueCursor(listing, journal, due)
    return plan
