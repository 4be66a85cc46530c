"""What the platforms report about devices, as facts the controller reads from ``devices``.

Greengrass and IoT Edge devices do not (all) run the edge agent, so their acknowledgement and
running release come from the platform (``feedback_greengrass``, ``feedback_iot_edge``). An
observation pass is bounded: a ``PassBudget`` caps the platform calls and the wall time of one
pass (so it fits a sensor tick, Dagster's default 60 s) and paces calls to a rate the platform's
quota allows (a token bucket); devices not reached wait for the next pass, oldest observation
first. ``fold_facts`` writes the facts into ``devices`` (``platform_version``, ``platform_state``,
``platform_observed_at``, and ``reported_version``: for a device its platform manages, what the
platform says it runs is its reported release), where acknowledgements, device timeouts,
cohorts and ``device_drift`` read them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

# Lifecycle states that mean the release does not run on the device (Greengrass component
# states, IoT Edge module runtimeStatus values): the gates count such a device as failed.
BROKEN_STATES = frozenset({"BROKEN", "ERRORED", "backoff", "failed", "unhealthy"})


@dataclass(frozen=True, slots=True)
class PlatformFact:
    """What the platform reports about one device now."""

    tenant_id: str
    device_id: str
    version: str | None  # the release it runs (None: the component/module is not there)
    state: str | None  # RUNNING, BROKEN, ERRORED, FINISHED... (Greengrass); running, backoff... (IoT Edge)
    acknowledged: bool  # the platform got the latest deployment to the device (applied or failed)
    observed_at: datetime
    detail: str = ""

    @property
    def broken(self) -> bool:
        return self.state in BROKEN_STATES


class PassBudget:
    """Bounds one observation pass: at most ``max_calls`` platform calls, ``max_seconds`` of wall
    time, paced to ``calls_per_second`` (thread-safe: observers call from a small pool)."""

    def __init__(
        self,
        *,
        max_calls: int = 5_000,
        max_seconds: float = 45.0,
        calls_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_calls, self.max_seconds, self.rate = max_calls, max_seconds, calls_per_second
        self.clock, self.sleep = clock, sleep
        self.calls = 0
        self.started = clock()
        self._next = self.started
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Reserve one call (sleeping to keep the rate); False once the pass is out of budget."""
        with self._lock:
            now = self.clock()
            if self.calls >= self.max_calls or now - self.started >= self.max_seconds:
                return False
            self.calls += 1
            wait = 0.0
            if self.rate:
                wait = max(0.0, self._next - now)
                self._next = max(now, self._next) + 1.0 / self.rate
        if wait:
            self.sleep(wait)
        return True

    @property
    def exhausted(self) -> bool:
        return self.calls >= self.max_calls or self.clock() - self.started >= self.max_seconds


def fold_facts(con: duckdb.DuckDBPyConnection, facts: Iterable[PlatformFact]) -> int:
    """Write ``facts`` into the devices' latest rows; returns how many rows changed."""
    rows = [
        {
            "tenant_id": f.tenant_id,
            "device_id": f.device_id,
            "version": f.version,
            "state": f.state,
            "at": f.observed_at,
        }
        for f in facts
    ]
    if not rows:
        return 0
    schema = pa.schema(
        [
            ("tenant_id", pa.string()),
            ("device_id", pa.string()),
            ("version", pa.string()),
            ("state", pa.string()),
            ("at", pa.timestamp("us", tz="UTC")),
        ]
    )
    con.register("_facts", pa.Table.from_pylist(rows, schema=schema))
    try:
        changed = con.execute(
            """SELECT count(*) FROM devices d JOIN _facts f USING (tenant_id, device_id)
               WHERE d.platform_version IS DISTINCT FROM f.version OR d.platform_state IS DISTINCT FROM f.state"""
        ).fetchone()[0]
        con.execute(
            """UPDATE devices d SET platform_version = f.version, platform_state = f.state,
                   platform_observed_at = f.at,
                   reported_version = CASE WHEN d.platform IN ('greengrass', 'iot_edge') AND f.version IS NOT NULL
                                           THEN f.version ELSE d.reported_version END
               FROM _facts f WHERE d.tenant_id = f.tenant_id AND d.device_id = f.device_id"""
        )
    finally:
        con.unregister("_facts")
    return int(changed)
