"""The batch arrival sensor's planner: list new objects after a cursor, in bounded pages, into run requests.

The cursor is JSON with a version field, ``{"v": 1, "after": "<last key listed>"}``. One
tick lists at most ``max_keys`` keys (pages of ``page_size``), keeps the ``.batch`` ones,
optionally drops those the ledger already settled, and groups the rest per tenant into
runs of at most ``keys_per_run`` keys. A run's key is a hash of its sorted object keys, so
a tick that is retried (same cursor, same listing) asks for the same runs and Dagster
deduplicates them.

Listing is lexicographic and strictly after the cursor, and keys sort by tenant, device,
stream and seq, so a device's next batch usually sorts *before* a caught-up cursor (every
device but the last one listed). When a tick reaches the end of the store the cursor
therefore starts over: the next pass re-lists from the beginning and the ledger filter
drops what is already ingested, so new objects anywhere are seen within one pass
(``stored objects / max_keys`` ticks) and nothing is ingested twice. The reconciliation
schedule still re-lists the whole store against the ledger as the backstop.

Only keys under ``tenant=`` are listed (:data:`~edge_sync.batch_keys.BATCH_PREFIX`): settled
objects moved to ``archive/`` (:mod:`edgeplat.sync.archive`) are never listed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge_sync.batch_keys import BATCH_PREFIX, BATCH_SUFFIX, parse_object_key
from edge_sync.objectstore import ObjectStore

CURSOR_VERSION = 1
DEFAULT_MAX_KEYS = 5_000
DEFAULT_KEYS_PER_RUN = 500
DEFAULT_PAGE_SIZE = 1_000
UNPARSED_TENANT = "_unparsed"


class CursorError(ValueError):
    """A sensor cursor this code cannot read; the message says how to reset it."""


@dataclass(frozen=True)
class ArrivalCursor:
    """Where the listing stopped: the last key listed (None: the beginning)."""

    after: str | None = None

    def to_json(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "after": self.after}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ArrivalCursor:
        if not text:
            return cls()
        try:
            doc = json.loads(text)
        except ValueError:
            raise CursorError(
                f"sensor cursor {text[:80]!r} is not JSON; reset the sensor's cursor in the Dagster UI"
            ) from None
        if not isinstance(doc, dict) or doc.get("v") != CURSOR_VERSION:
            raise CursorError(
                f"sensor cursor {text[:80]!r} is not version {CURSOR_VERSION}; reset the sensor's cursor "
                "(reconciliation ingests anything a reset skips over)"
            )
        after = doc.get("after")
        if after is not None and not isinstance(after, str):
            raise CursorError(f"sensor cursor 'after' must be a key or null, got {after!r}")
        return cls(after)


@dataclass(frozen=True)
class PlannedRun:
    """One ingest run: a tenant's object keys and a stable run key."""

    tenant_id: str
    keys: tuple[str, ...]

    @property
    def run_key(self) -> str:
        digest = hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()[:24]
        return f"ingest:{self.tenant_id}:{digest}"


@dataclass(frozen=True)
class ArrivalPlan:
    """A tick's outcome: the runs to request, the next cursor and what was listed."""

    runs: list[PlannedRun]
    cursor: ArrivalCursor
    listed: int  # keys listed this tick (bounded by max_keys)
    settled: int  # batch keys dropped because the ledger already holds them
    ignored: int  # keys that are not batch objects (desired.json, stray files)
    caught_up: bool  # the listing reached the end of the store


def runs_for(keys: Iterable[str], keys_per_run: int = DEFAULT_KEYS_PER_RUN) -> list[PlannedRun]:
    """Group batch keys per tenant into runs of at most ``keys_per_run`` (sorted, deterministic)."""
    if keys_per_run < 1:
        raise ValueError(f"keys_per_run must be positive, got {keys_per_run}")
    by_tenant: dict[str, list[str]] = {}
    for key in sorted(set(keys)):
        by_tenant.setdefault(parse_object_key(key).tenant_id, []).append(key)
    return [
        PlannedRun(tenant, tuple(ks[i : i + keys_per_run]))
        for tenant, ks in sorted(by_tenant.items())
        for i in range(0, len(ks), keys_per_run)
    ]


def plan_runs(fresh: Iterable[str], keys_per_run: int = DEFAULT_KEYS_PER_RUN) -> list[PlannedRun]:
    """Runs for ``.batch`` keys not yet settled: per tenant, and malformed ones apart.

    A '.batch' key that is not a batch key is still ingested (and quarantined as path_mismatch)
    under a pseudo-tenant, so it shows in the quarantine instead of being ignored.
    """
    fresh = set(fresh)
    parseable = [k for k in fresh if is_batch_key(k)]
    runs = runs_for(parseable, keys_per_run)
    stray = sorted(fresh - set(parseable))
    runs += [
        PlannedRun(UNPARSED_TENANT, tuple(stray[i : i + keys_per_run]))
        for i in range(0, len(stray), keys_per_run)
    ]
    return runs


def is_batch_key(key: str) -> bool:
    if not key.endswith(BATCH_SUFFIX):
        return False
    try:
        parse_object_key(key)
    except ValueError:
        return False
    return True


def plan_arrivals(
    store: ObjectStore,
    cursor: ArrivalCursor,
    *,
    max_keys: int = DEFAULT_MAX_KEYS,
    keys_per_run: int = DEFAULT_KEYS_PER_RUN,
    page_size: int = DEFAULT_PAGE_SIZE,
    settled: Callable[[list[str]], set[str]] | None = None,
) -> ArrivalPlan:
    """List at most ``max_keys`` keys after ``cursor`` and plan ingest runs for the new batch objects.

    ``settled(keys)`` returns those already in the ledger or quarantine (skipped). Malformed
    ``.batch`` keys are planned too: the ingest quarantines them with a reason.
    """
    if max_keys < 1 or page_size < 1:
        raise ValueError(f"max_keys and page_size must be positive, got {max_keys} and {page_size}")
    after = cursor.after
    listed: list[str] = []
    caught_up = False
    while len(listed) < max_keys:
        page = store.list(BATCH_PREFIX, after=after, limit=min(page_size, max_keys - len(listed)))
        listed.extend(o.key for o in page.objects)
        if page.objects:
            after = page.objects[-1].key
        if page.next_after is None:
            caught_up = True
            break
    batch_keys = [k for k in listed if k.endswith(BATCH_SUFFIX)]
    known = settled(batch_keys) if (settled is not None and batch_keys) else set()
    fresh = [k for k in batch_keys if k not in known]
    return ArrivalPlan(
        runs=plan_runs(fresh, keys_per_run),
        cursor=ArrivalCursor(None if caught_up else after),
        listed=len(listed),
        settled=len(known),
        ignored=len(listed) - len(batch_keys),
        caught_up=caught_up,
    )
