"""Upload-to-queryable latency of an arrival path, replayed on a virtual clock with real work.

An *arrival path* is how the central side finds new batch objects: today's listing planner
(:class:`ListingArrivals`), or notifications (:class:`NotificationArrivals`: the queue-driven
planner ``edgeplat.sync.queue_arrivals.plan_tick`` on the local store's journal or SQS). :func:`replay` drives one against a real store and a real lakehouse: a
stream of real signed batches (:class:`StreamFleet`) is uploaded at its virtual times; every
``interval`` virtual seconds the path ticks (really: it lists or reads its queue and asks the
ledger), the runs it plans are ingested in process (really: ``ingest_objects``) one after
another, and every ``backstop_period`` the path's backstop runs (reconciliation). Sleeping
is replaced by the clock: a tick at virtual time ``t`` that took ``s`` seconds of wall clock
commits its first run at ``t + s + run``, and so on. An object's latency is its commit time
minus its upload time; run launch (dequeue, worker start) is left out, the same for every path.

:class:`CountingStore` counts what a path asks of the store (list requests, keys listed),
:class:`CountingQueue` what it asks of the queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_sync.batch import write_batch
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import ListPage, ObjectInfo, ObjectStore
from edgeplat.simulator.settled_store import SettledLayout
from edgeplat.simulator.tenant_batches import telemetry_rows
from edgeplat.sync.arrival_queue import ArrivalMessage, ArrivalQueue
from edgeplat.sync.arrivals import DEFAULT_KEYS_PER_RUN, DEFAULT_MAX_KEYS, ArrivalCursor, plan_arrivals
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.ledger import settled_keys
from edgeplat.sync.queue_arrivals import (
    DEFAULT_BACKSTOP_INTERVAL_S,
    DEFAULT_BACKSTOP_KEYS,
    DEFAULT_MAX_MESSAGES,
    QueueCursor,
    plan_tick,
)
from edgeplat.sync.reconcile import ingest_missed


class CountingStore(ObjectStore):
    """An object store that counts the list requests made through it and the keys they returned."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.list_requests = 0
        self.keys_listed = 0

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.put_if_absent(key, data)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ListPage:
        page = self.inner.list(prefix, after=after, limit=limit)
        # a list call of up to 1,000 keys is one ListObjectsV2 request on S3
        self.list_requests += -(-limit // 1000)
        self.keys_listed += len(page.objects)
        return page

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()


@dataclass
class QueueTally:
    """What arrival queues were asked, summed over the queues opened (one per tick)."""

    calls: int = 0  # a receive, an ack, a dead-letter: one request each (one read of the local journal)
    received: int = 0


class CountingQueue:
    """An arrival queue that adds its calls and received messages to a :class:`QueueTally`."""

    def __init__(self, inner: ArrivalQueue, tally: QueueTally) -> None:
        self.inner, self.tally = inner, tally
        self.url = inner.url

    def __getattr__(self, name: str):  # restarted, in_flight_bytes, ...
        return getattr(self.inner, name)

    def receive(self, max_messages: int) -> list[ArrivalMessage]:
        self.tally.calls += 1
        got = self.inner.receive(max_messages)
        self.tally.received += len(got)
        return got

    def ack(self, messages: Sequence[ArrivalMessage]) -> None:
        self.tally.calls += bool(messages)
        self.inner.ack(messages)

    def dead_letter(self, messages: Sequence[ArrivalMessage]) -> None:
        self.tally.calls += bool(messages)
        self.inner.dead_letter(messages)

    def checkpoint(self) -> dict | None:
        return self.inner.checkpoint()

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class Upload:
    """One new batch object and its virtual upload time."""

    at: float
    key: str
    data: bytes
    rows: int


class StreamFleet:
    """Devices of a settled layout that keep uploading: enrolled, keyed, their next batches real.

    ``devices`` devices spread evenly over the layout's key space (so new keys land all over
    the listing order, as a fleet's do); each new batch continues its device's seqs after the
    settled history.
    """

    def __init__(self, root: Path, layout: SettledLayout, devices: int) -> None:
        self.layout = layout
        self.keyring = LocalKeyring(root / "keys")
        self.registry = LocalDeviceRegistry(root / "registry")
        for tenant in layout.tenant_ids:
            self.keyring.generate_data_key(tenant)
        every = layout.device_ids()
        step = max(1, len(every) // devices)
        self.devices = [DeviceIdentity.generate(tenant, device) for tenant, device in every[::step][:devices]]
        for ident in self.devices:
            self.registry.register(ident.tenant_id, ident.device_id, ident.public_key_bytes())
        self._next = {ident.device_id: layout.next_seq for ident in self.devices}

    def batch(self, ident: DeviceIdentity) -> tuple[str, bytes, int]:
        first, n = self._next[ident.device_id], self.layout.rows_per_batch
        self._next[ident.device_id] = first + n
        enc = write_batch(
            telemetry_rows(ident.tenant_id, ident.device_id, first, n),
            tenant_id=ident.tenant_id,
            device_id=ident.device_id,
            stream="telemetry",
            key_service=self.keyring,
            identity=ident,
            created_ms=0,
        )
        return enc.key, enc.data, n

    def uploads(self, count: int, window: float, seed: int = 20) -> list[Upload]:
        """``count`` new batches at uniform random times in ``[0, window)``, in time order."""
        rng = np.random.default_rng(seed)
        times = np.sort(rng.uniform(0.0, window, count))
        picks = rng.integers(0, len(self.devices), count)
        return [Upload(float(at), *self.batch(self.devices[i])) for at, i in zip(times, picks, strict=True)]


@dataclass(frozen=True)
class TickCost:
    """What one tick of an arrival path cost: wall seconds and what it asked of store and queue."""

    seconds: float
    list_requests: int = 0
    keys_listed: int = 0
    queue_requests: int = 0
    messages: int = 0
    ledger_seconds: float = 0.0  # of ``seconds``: asking the ledger which keys are settled


@dataclass(frozen=True)
class Tick:
    """A tick's plan: per-tenant runs of object keys, and its cost."""

    runs: list[tuple[str, Sequence[str]]]
    cost: TickCost
    note: str = ""


class ArrivalPath(Protocol):
    """How the central side finds new batch objects (module doc)."""

    name: str

    def tick(self, now: float) -> Tick:
        """Plan at virtual time ``now`` (seconds since the replay started)."""

    def backstop(self) -> None:
        """The reconciliation backstop: ingest whatever the ticks missed."""


class TimedLedger:
    """``settled(keys)`` for a planner, timing the ledger lookups of one tick."""

    def __init__(self, con) -> None:
        self.con, self.seconds = con, 0.0

    def __call__(self, keys: list[str]) -> set[str]:
        started = time.perf_counter()
        try:
            return settled_keys(self.con, keys)
        finally:
            self.seconds += time.perf_counter() - started


class ListingArrivals:
    """Today's arrival path: the listing planner after its cursor, as the sensor runs it (ledger
    filter included), with reconciliation's ``ingest_missed`` (whole store against the whole
    ledger) as the backstop."""

    name = "listing"

    def __init__(
        self,
        env: SyncEnv,
        store: CountingStore,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        keys_per_run: int = DEFAULT_KEYS_PER_RUN,
    ) -> None:
        self.env, self.store, self.cursor = env, store, ArrivalCursor()
        self.max_keys, self.keys_per_run = max_keys, keys_per_run

    def tick(self, now: float) -> Tick:
        requests, keys = self.store.list_requests, self.store.keys_listed
        started = time.perf_counter()
        with self.env.lakehouse.session(read_only=True) as con:
            ledger = TimedLedger(con)
            plan = plan_arrivals(
                self.store,
                self.cursor,
                max_keys=self.max_keys,
                keys_per_run=self.keys_per_run,
                settled=ledger,
            )
        took = time.perf_counter() - started
        self.cursor = plan.cursor
        return Tick(
            [(r.tenant_id, r.keys) for r in plan.runs],
            TickCost(
                took,
                self.store.list_requests - requests,
                self.store.keys_listed - keys,
                ledger_seconds=ledger.seconds,
            ),
        )

    def backstop(self) -> None:
        with self.env.lakehouse.session() as con:
            ingest_missed(self.env, con)


class NotificationArrivals:
    """The notification path: ``plan_tick`` on an arrival queue, its bounded listing backstop
    included, at the replay's virtual time; ``reconcile`` also runs reconciliation's
    ``ingest_missed`` every backstop period (it finds nothing the queue did not, but costs).

    ``open_queue(position, now)`` opens the queue at virtual time ``now`` (epoch seconds);
    ``backstop_from``: virtual time the listing backstop is first due (after a pass it is due
    ``backstop_interval_s`` later); ``requests()`` counts the queue's requests so far (default: the :class:`CountingQueue` calls;
    SQS's exact HTTP requests can be counted with a botocore event handler instead).
    """

    def __init__(
        self,
        env: SyncEnv,
        store: CountingStore,
        open_queue: Callable[[dict | None, Callable[[], float]], ArrivalQueue],
        *,
        name: str = "notifications",
        requests: Callable[[], int] | None = None,
        reconcile: bool = True,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        backstop_keys: int = DEFAULT_BACKSTOP_KEYS,
        backstop_interval_s: float = DEFAULT_BACKSTOP_INTERVAL_S,
        keys_per_run: int = DEFAULT_KEYS_PER_RUN,
        backstop_from: float = 0.0,
        epoch: float = 1_800_000_000.0,
    ) -> None:
        self.env, self.store, self.name = env, store, name
        self.cursor = QueueCursor(backstop_due=epoch + backstop_from)
        self.reconcile = reconcile
        self.epoch, self.clock = epoch, 0.0
        self.tally = QueueTally()
        self.requests = requests or (lambda: self.tally.calls)
        self.limits = dict(
            max_messages=max_messages,
            backstop_keys=backstop_keys,
            backstop_interval_s=backstop_interval_s,
            keys_per_run=keys_per_run,
        )
        self._open_queue = open_queue

    def _open(self, position: dict | None) -> ArrivalQueue:
        return CountingQueue(self._open_queue(position, lambda: self.epoch + self.clock), self.tally)

    def tick(self, now: float) -> Tick:
        self.clock = now
        requests, keys, listed, received = (
            self.requests(),
            self.store.keys_listed,
            self.store.list_requests,
            self.tally.received,
        )
        started = time.perf_counter()
        with self.env.lakehouse.session(read_only=True) as con:
            ledger = TimedLedger(con)
            plan = plan_tick(
                self.store,
                self._open,
                self.cursor,
                settled=ledger,
                now=self.epoch + now,
                **self.limits,
            )
        took = time.perf_counter() - started
        self.cursor = plan.cursor
        cost = TickCost(
            took,
            self.store.list_requests - listed,
            self.store.keys_listed - keys,
            self.requests() - requests,
            self.tally.received - received,
            ledger.seconds,
        )
        return Tick([(r.tenant_id, r.keys) for r in plan.runs], cost, plan.summary() if plan.outage else "")

    def backstop(self) -> None:
        if self.reconcile:
            with self.env.lakehouse.session() as con:
                ingest_missed(self.env, con)


@dataclass
class Replay:
    """A replay's outcome: per-object latency and per-tick costs."""

    latencies: dict[str, float] = field(default_factory=dict)  # object key -> seconds to queryable
    ticks: list[TickCost] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)
    backstops: list[float] = field(default_factory=list)  # wall seconds of each backstop run
    by_backstop: int = 0  # objects the backstop ingested
    notes: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return float(np.percentile(list(self.latencies.values()), q)) if self.latencies else float("nan")

    def mean_tick(self, what: str = "seconds") -> float:
        return float(np.mean([getattr(t, what) for t in self.ticks])) if self.ticks else 0.0


def replay(
    env: SyncEnv,
    path: ArrivalPath,
    uploads: Sequence[Upload],
    *,
    interval: float,
    backstop_period: float,
    max_ticks: int = 10_000,
    on_tick: Callable[[int, Tick], None] | None = None,
) -> Replay:
    """Replay ``uploads`` through ``path`` until every one is queryable (module doc)."""
    out = Replay()
    waiting = {u.key: u for u in uploads}
    next_upload = 0
    next_backstop = backstop_period
    for k in range(max_ticks):
        now = k * interval
        while next_upload < len(uploads) and uploads[next_upload].at <= now:
            u = uploads[next_upload]
            env.store.put_if_absent(u.key, u.data)
            next_upload += 1
        tick = path.tick(now)
        out.ticks.append(tick.cost)
        if tick.note:
            out.notes.append(tick.note)
        if on_tick is not None:
            on_tick(k, tick)
        clock = now + tick.cost.seconds
        for _tenant, keys in tick.runs:
            started = time.perf_counter()
            ingest_objects(env, keys)
            took = time.perf_counter() - started
            out.run_seconds.append(took)
            clock += took
            for key in keys:
                if key in waiting:
                    out.latencies[key] = clock - waiting.pop(key).at
        if now >= next_backstop:
            # reconciliation runs beside the sensor: what the tick at this instant planned is not its find
            uploaded = _uploaded(uploads, next_upload)
            started = time.perf_counter()
            path.backstop()
            took = time.perf_counter() - started
            out.backstops.append(took)
            found = _queryable(env, [key for key in waiting if key in uploaded])
            for key in found:
                out.latencies[key] = next_backstop + took - waiting.pop(key).at
            out.by_backstop += len(found)
            next_backstop += backstop_period
        if not waiting and next_upload == len(uploads):
            return out
    raise RuntimeError(
        f"{path.name}: {len(waiting)} of {len(uploads)} uploads still not queryable after {max_ticks} ticks"
    )


def _uploaded(uploads: Sequence[Upload], n: int) -> set[str]:
    return {u.key for u in uploads[:n]}


def _queryable(env: SyncEnv, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    with env.lakehouse.session(read_only=True) as con:
        return settled_keys(con, keys, pending_too=False)
