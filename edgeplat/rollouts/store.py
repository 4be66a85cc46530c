"""The durable record of rollouts in the lakehouse: event logs, summary rows, devices sent to.

``rollout_events`` is the source of truth (architecture invariant 6): one row per event and
targeted tenant (so a tenant's SQL sees the rollouts that touched it), ordered by ``seq``.
Appends are idempotent by ``event_id`` (the machine's decision key): an append skips keys
already stored, and reads keep the first row of a key, so even two writers racing past
each other's check cannot fold a decision twice. ``rollouts`` is a summary (status, phase)
rewritten from the folded log on every append. ``rollout_devices`` records which devices a
deploy or rollback was sent to, so a tick knows whom it still owes an action and since when.
``rollout_assignments`` and ``device_drift`` are views for people (SQL, the Dagster UI),
recomputed whole by the assets that own them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from edgeplat.lakehouse import Lakehouse, retried
from edgeplat.rollouts.events import TERMINAL, Event, Kind, RolloutState
from edgeplat.rollouts.spec import RolloutSpec

T = TypeVar("T")
_EVENT_COLS = 'event_id, kind, phase, "at", actor, reason, inputs, seq'


class RolloutNotFound(KeyError):
    """No rollout with that id (or name) in the lakehouse."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class RolloutRow:
    """One rollout's summary, as ``edgeplat rollout list`` shows it."""

    rollout_id: str
    name: str
    release_version: str
    status: str
    phase: int
    tenants: tuple[str, ...]
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "name": self.name,
            "release_version": self.release_version,
            "status": self.status,
            "phase": self.phase,
            "tenants": list(self.tenants),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def _event_from_row(name: str, row: Sequence[Any]) -> Event:
    event_id, kind, phase, at, actor, reason, inputs, _seq = row
    return Event(kind, name, _utc(at), phase, actor or "", reason or "", json.loads(inputs or "{}"), event_id)


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` readable as ``name`` in SQL on ``con`` inside the block."""
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


def _tenants_of(events: Sequence[Event]) -> list[str]:
    spec = events[0].inputs.get("spec") or {}
    return list((spec.get("target") or {}).get("tenants") or [])


class RolloutStore:
    """Reads and idempotent appends of rollout logs in one lakehouse."""

    def __init__(self, lake: Lakehouse) -> None:
        self.lake = lake
        self._con: duckdb.DuckDBPyConnection | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Reuse one connection for every read and write inside the block (attaching the
        lakehouse costs far more than a query: a tick opens one connection, not ten)."""
        if self._con is not None:
            yield self._con
            return
        with self.lake.session() as con:
            self._con = con
            try:
                yield con
            finally:
                self._con = None

    @contextlib.contextmanager
    def _reader(self, con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
        if con is not None or self._con is not None:
            yield con or self._con  # type: ignore[misc]
            return
        with self.lake.session(read_only=True) as c:
            yield c

    def write(self, unit: Callable[[duckdb.DuckDBPyConnection], T], what: str) -> T:
        """``Lakehouse.write`` on the session's connection when there is one (same retry rule)."""
        con = self._con
        if con is None:
            return self.lake.write(unit, what=what)
        return retried(con, unit, what=what, max_retries=self.lake.config.max_retries)

    # ------------------------------------------------------------------ reads

    def events(self, rollout_id: str, con: duckdb.DuckDBPyConnection | None = None) -> list[Event]:
        """The rollout's log in order (duplicates of an event id dropped); raises RolloutNotFound."""
        logs = self.events_many([rollout_id], con)
        if not logs.get(rollout_id):
            raise RolloutNotFound(
                f"no rollout {rollout_id!r} in the lakehouse; `edgeplat rollout list` shows the ids"
            )
        return logs[rollout_id]

    def events_many(
        self, rollout_ids: Iterable[str], con: duckdb.DuckDBPyConnection | None = None
    ) -> dict[str, list[Event]]:
        """Logs of several rollouts in one query (the promotion sensor reads all active ones)."""
        ids = sorted(set(rollout_ids))
        if not ids:
            return {}
        with self._reader(con) as c:
            rows = c.execute(
                f"""SELECT rollout_id, {_EVENT_COLS} FROM rollout_events
                    WHERE rollout_id IN (SELECT unnest(?::VARCHAR[]))
                    QUALIFY row_number() OVER (PARTITION BY rollout_id, event_id ORDER BY seq, tenant_id) = 1
                    ORDER BY rollout_id, seq""",
                [ids],
            ).fetchall()
        grouped: dict[str, list[tuple]] = {}
        for r in rows:
            grouped.setdefault(r[0], []).append(r[1:])
        out: dict[str, list[Event]] = {}
        for rid, rs in grouped.items():
            first = json.loads(rs[0][6] or "{}")
            name = (first.get("spec") or {}).get("name", rid)
            out[rid] = [_event_from_row(name, r) for r in rs]
        return out

    def state(self, rollout_id: str, con: duckdb.DuckDBPyConnection | None = None) -> RolloutState:
        return RolloutState.from_events(self.events(rollout_id, con))

    def list_rollouts(self, *, active_only: bool = False) -> list[RolloutRow]:
        """Every rollout (newest first), one row each whatever the number of tenants."""
        with self._reader(None) as con:
            rows = con.execute(
                """SELECT rollout_id, any_value(name), any_value(release_version), any_value(status),
                          any_value(phase), list(DISTINCT tenant_id ORDER BY tenant_id),
                          min(created_at), max(updated_at)
                   FROM rollouts GROUP BY rollout_id ORDER BY min(created_at) DESC, rollout_id"""
            ).fetchall()
        out = [RolloutRow(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), _utc(r[6]), _utc(r[7])) for r in rows]
        if active_only:
            out = [r for r in out if r.status not in {str(s) for s in TERMINAL}]
        return out

    def active_ids(self) -> list[str]:
        """Rollouts the promotion sensor still has to drive (not completed, rolled back or aborted)."""
        return [r.rollout_id for r in self.list_rollouts(active_only=True)]

    def resolve(self, id_or_name: str) -> str:
        """A rollout id from an id or a rollout name (the newest rollout of that name)."""
        rows = self.list_rollouts()
        for r in rows:
            if r.rollout_id == id_or_name:
                return r.rollout_id
        for r in rows:  # newest first
            if r.name == id_or_name:
                return r.rollout_id
        raise RolloutNotFound(
            f"no rollout with id or name {id_or_name!r}; `edgeplat rollout list` shows the ids"
        )

    def sent(self, rollout_id: str, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """Devices the rollout sent something to: tenant_id, device_id, platform, phase, action, at
        (the first send of each (device, action))."""
        return self.sent_many([rollout_id], con)[rollout_id]

    def sent_many(
        self, rollout_ids: Iterable[str], con: duckdb.DuckDBPyConnection | None = None
    ) -> dict[str, pa.Table]:
        """``sent`` for several rollouts in one query (the promotion tick reads all active ones)."""
        ids = sorted(set(rollout_ids))
        with self._reader(con) as c:
            table = c.execute(
                """SELECT rollout_id, tenant_id, device_id, platform, phase, action, "at" FROM rollout_devices
                   WHERE rollout_id IN (SELECT unnest(?::VARCHAR[]))
                   QUALIFY row_number() OVER (PARTITION BY rollout_id, tenant_id, device_id, action
                                              ORDER BY "at", phase) = 1
                   ORDER BY rollout_id""",
                [ids],
            ).fetch_arrow_table()
        col = table.column("rollout_id").to_pylist()
        out = {}
        start = 0
        for rid in ids:  # rows are sorted by rollout: slice, don't filter
            n = 0
            while start + n < len(col) and col[start + n] == rid:
                n += 1
            out[rid] = table.slice(start, n).drop_columns(["rollout_id"])
            start += n
        return out

    # ------------------------------------------------------------------ writes

    def append(self, rollout_id: str, events: Sequence[Event]) -> list[Event]:
        """Append the events whose ids are not stored yet; returns those written.

        The first event of a new rollout must be ``created``. Updates the ``rollouts`` summary
        rows in the same transaction.
        """
        for e in events:
            if not e.key:
                raise ValueError(f"event {e.kind!r} of {rollout_id!r} has no key: every event needs an id")

        def unit(con: duckdb.DuckDBPyConnection) -> list[Event]:
            existing = self.events_many([rollout_id], con).get(rollout_id, [])
            have = {e.key for e in existing}
            fresh, seen = [], set(have)
            for e in events:
                if e.key not in seen:
                    seen.add(e.key)
                    fresh.append(e)
            if not fresh:
                return []
            log = existing + fresh
            if log[0].kind != Kind.CREATED:
                raise ValueError(
                    f"rollout {rollout_id!r} has no 'created' event: launch it before appending decisions"
                )
            tenants = _tenants_of(log)
            seq0 = con.execute(
                "SELECT coalesce(max(seq), -1) + 1 FROM rollout_events WHERE rollout_id = ?", [rollout_id]
            ).fetchone()[0]
            rows = [
                (
                    t,
                    rollout_id,
                    e.key,
                    str(e.kind),
                    e.phase,
                    e.at,
                    e.actor,
                    e.reason,
                    json.dumps(e.inputs, sort_keys=True, default=str),
                    seq0 + i,
                )
                for i, e in enumerate(fresh)
                for t in tenants
            ]
            con.executemany(
                'INSERT INTO rollout_events (tenant_id, rollout_id, event_id, kind, phase, "at", actor, reason, '
                "inputs, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._write_summary(con, rollout_id, RolloutState.from_events(log), tenants)
            return fresh

        return self.write(unit, f"append to rollout {rollout_id}")

    def record_sent(
        self,
        rollout_id: str,
        rows: Sequence[tuple[str, str, str | None, int | None]],
        action: str,
        event_id: str,
        at: datetime,
    ) -> int:
        """Record that ``action`` was sent to ``rows`` of (tenant_id, device_id, platform, phase);
        devices already recorded for that action are skipped. Returns how many were new."""
        if not rows:
            return 0
        tbl = pa.table(
            {
                "tenant_id": [r[0] for r in rows],
                "device_id": [r[1] for r in rows],
                "platform": [r[2] for r in rows],
                "phase": pa.array([r[3] for r in rows], pa.int32()),
            }
        )

        def unit(con: duckdb.DuckDBPyConnection) -> int:
            with _registered(con, "_sent_in", tbl):
                n = con.execute(
                    """INSERT INTO rollout_devices
                       SELECT DISTINCT ON (i.tenant_id, i.device_id) i.tenant_id, ?, i.device_id, i.platform,
                              i.phase, ?, ?, ?
                       FROM _sent_in i
                       WHERE NOT EXISTS (SELECT 1 FROM rollout_devices d WHERE d.rollout_id = ?
                             AND d.action = ? AND d.tenant_id = i.tenant_id AND d.device_id = i.device_id)""",
                    [rollout_id, action, event_id, at, rollout_id, action],
                ).fetchone()[0]
            return int(n)

        return self.write(unit, f"record devices of rollout {rollout_id}")

    # ------------------------------------------------------------------ views for people

    def replace_assignments(self, rollout_id: str, table: pa.Table, at: datetime) -> None:
        """Rewrite the rollout's rows of ``rollout_assignments`` from ``table`` (tenant_id, device_id,
        bucket, phase, desired_version, desired_slot: ``world.assignments``), computed ``at``."""
        self._rewrite(
            table,
            ("DELETE FROM rollout_assignments WHERE rollout_id = ?", [rollout_id]),
            (
                "INSERT INTO rollout_assignments (tenant_id, rollout_id, device_id, bucket, phase, "
                "desired_version, desired_slot, computed_at) SELECT tenant_id, ?, device_id, bucket, phase, "
                "desired_version, desired_slot, ? FROM _rows",
                [rollout_id, at],
            ),
            f"assignments of {rollout_id}",
        )

    def assigned_phases(self, rollout_id: str, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """tenant_id, device_id, phase of the rollout's stored assignments."""
        with self._reader(con) as c:
            return c.execute(
                "SELECT tenant_id, device_id, phase FROM rollout_assignments WHERE rollout_id = ?",
                [rollout_id],
            ).fetch_arrow_table()

    def assignment_counts(self, rollout_id: str) -> list[tuple[int, int, int]]:
        """Per phase of the stored assignments: (phase, devices, devices that should run the release now)."""
        return self._fetchall(
            "SELECT phase, count(*), count(desired_version) FROM rollout_assignments WHERE rollout_id = ? "
            "GROUP BY phase ORDER BY phase",
            [rollout_id],
        )

    def replace_drift(self, table: pa.Table, at: datetime) -> None:
        """Rewrite ``device_drift`` from ``table`` (``cohorts.drift``), computed ``at``."""
        self._rewrite(
            table,
            ("DELETE FROM device_drift", []),
            (
                "INSERT INTO device_drift (tenant_id, device_id, rollout_id, rollout, desired_version, "
                "reported_version, status, rolled_back, drifted, computed_at) SELECT tenant_id, device_id, "
                "rollout_id, rollout, desired_version, reported_version, status, rolled_back, drifted, ? "
                "FROM _rows",
                [at],
            ),
            "device drift",
        )

    def drift_counts(self) -> list[tuple[str, int, int, int]]:
        """Per rollout (``(none)``: devices no rollout deployed to) of ``device_drift``:
        (rollout_id, devices, drifted, rolled back)."""
        return self._fetchall(
            "SELECT coalesce(rollout_id, '(none)'), count(*), count(*) FILTER (WHERE drifted), "
            "count(*) FILTER (WHERE rolled_back) FROM device_drift GROUP BY 1 ORDER BY 1"
        )

    def drifted_devices(self, limit: int) -> list[tuple[str, str, str, str, str, str]]:
        """The first ``limit`` drifted devices of ``device_drift``: (tenant_id, device_id, rollout_id,
        desired_version, reported_version, status)."""
        return self._fetchall(
            "SELECT tenant_id, device_id, rollout_id, desired_version, reported_version, status "
            "FROM device_drift WHERE drifted ORDER BY tenant_id, device_id LIMIT ?",
            [limit],
        )

    def _fetchall(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        with self._reader(None) as con:
            return con.execute(sql, params or []).fetchall()

    def _rewrite(
        self, rows: pa.Table, delete: tuple[str, list[Any]], insert: tuple[str, list[Any]], what: str
    ) -> None:
        """Run ``delete``, then ``insert`` reading ``rows`` as ``_rows``, in one retried write."""

        def unit(con: duckdb.DuckDBPyConnection) -> None:
            with _registered(con, "_rows", rows):
                con.execute(*delete)
                con.execute(*insert)

        self.write(unit, what)

    @staticmethod
    def _write_summary(
        con: duckdb.DuckDBPyConnection, rollout_id: str, state: RolloutState, tenants: list[str]
    ) -> None:
        spec: RolloutSpec = state.spec
        now = state.events[-1].at
        con.execute("DELETE FROM rollouts WHERE rollout_id = ?", [rollout_id])
        con.executemany(
            "INSERT INTO rollouts (tenant_id, rollout_id, name, release_version, spec, status, phase, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    t,
                    rollout_id,
                    spec.name,
                    spec.release.version,
                    spec.model_dump_json(),
                    str(state.status),
                    state.phase,
                    state.created_at,
                    now,
                )
                for t in tenants
            ],
        )
