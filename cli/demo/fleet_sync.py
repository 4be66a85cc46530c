"""The demo's sync part: a simulated multi-tenant fleet, then what the central side stored of it.

The fleet (real device agents with encrypted caches, outages, clock skew, crashes mid-upload,
state edited on devices and centrally) is simulated once per state directory; its ground
truth is saved beside it, so a later demo compares the same truth with what is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from edge_sync.streams import STREAMS
from edgeplat.lakehouse import Lakehouse
from edgeplat.settings import paths
from edgeplat.simulator import SimulationConfig, simulate, write_truth
from edgeplat.sync.stamped_edits import record_stamped_edits

FLEET = {
    "devices": 24,
    "tenants": 3,
    "hours": 2.0,
    "offline_fraction": 0.35,
    "outage_minutes": 50.0,
    "clock_skew_s": 90.0,
    "crash_rate": 0.05,
    "seed": 7,
    "device_edit_rate_per_hour": 3.0,
    "central_edit_rate_per_hour": 2.0,
}


def simulate_fleet(
    lake: Lakehouse, say: Callable[[str], None], parts: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Simulate the demo fleet once; later calls return the saved result. ``parts``: the
    simulator's store, keyring, registry, signer and desired-state records (default: embedded)."""
    marker = paths().home / "demo" / "fleet.json"
    if marker.exists():
        say(f"fleet already simulated in this state directory ({marker}); re-syncing only")
        return json.loads(marker.read_text())
    marker.parent.mkdir(parents=True, exist_ok=True)
    hours = FLEET["hours"]
    # End the simulated window now, so lags and freshness read as they would in the field.
    start_ms = int(time.time() * 1000 - hours * 3_600_000 - 60_000)
    config = SimulationConfig(**FLEET, start_ms=start_ms)
    say(
        f"simulating {config.devices} devices of {config.tenants} tenants for {hours:g} h "
        f"(outages, clock skew up to {config.clock_skew_s:g} s, crashes mid-upload)"
    )
    result = simulate(
        config, central_edit_sink=lambda edits: record_stamped_edits(lake, edits), **(parts or {})
    )
    write_truth(marker.with_name("truth.json"), result.truth)
    saved = {"summary": result.summary, "truth": result.truth}
    marker.write_text(json.dumps(saved))
    return saved


def stored_rows(lake: Lakehouse, tenants: set[str]) -> dict[str, int]:
    tenant_list = sorted(tenants)
    with lake.session(read_only=True) as con:
        return {
            stream: con.execute(
                f'SELECT count(*) FROM "{spec.table}" WHERE list_contains(?, tenant_id)', [tenant_list]
            ).fetchone()[0]
            for stream, spec in STREAMS.items()
            if _has_table(con, spec.table)
        }


def _has_table(con, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND table_name = ?", [name]
        ).fetchone()[0]
    )


def central_picture(lake: Lakehouse, tenants: set[str]) -> dict[str, Any]:
    tenant_list = sorted(tenants)
    with lake.session(read_only=True) as con:
        quarantined = dict(
            con.execute(
                "SELECT reason, count(*) FROM quarantine WHERE list_contains(?, tenant_id) GROUP BY 1 ORDER BY 1",
                [tenant_list],
            ).fetchall()
        )
        conflicts = dict(
            con.execute(
                "SELECT rule, count(*) FROM state_conflicts WHERE list_contains(?, tenant_id) GROUP BY 1 ORDER BY 1",
                [tenant_list],
            ).fetchall()
        )
        lag = con.execute(
            "SELECT max(lag_seconds), median(lag_seconds) FROM sync_lag WHERE list_contains(?, tenant_id)",
            [tenant_list],
        ).fetchone()
        evicted = con.execute(
            "SELECT coalesce(sum(count), 0) FROM evictions WHERE list_contains(?, tenant_id)", [tenant_list]
        ).fetchone()[0]
        states = con.execute(
            "SELECT count(*) FROM device_state WHERE list_contains(?, tenant_id)", [tenant_list]
        ).fetchone()[0]
    return {
        "quarantined": quarantined,
        "conflicts_by_rule": conflicts,
        "state_fields": states,
        "evicted_rows_reported": int(evicted),
        "sync_lag_s": {"max": _round(lag[0]), "median": _round(lag[1])},
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 1)


def rows_by_stream(truth: dict[str, Any], stored: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in truth["streams"]:
        s = out.setdefault(r["stream"], {"generated": 0, "evicted": 0, "pending": 0})
        for k in ("generated", "evicted", "pending"):
            s[k] += r[k]
    for stream, s in out.items():
        s["stored"] = stored.get(stream, 0)
        s["missing"] = s["generated"] - s["evicted"] - s["pending"] - s["stored"]
    return out
