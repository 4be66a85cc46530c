"""Configuration drift, both ways: per field, reported with its age and cleared when the device converges.

Real device agents (encrypted cache, signed batches, the downlink applying signed desired-state
documents), the real ingest and the central merge; central edits through ``apply_central_edits``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from edgeplat.sync import config_drift
from tests.support.config_drift import DriftWorld
from tests.support.fleet import Fleet

MIN = 60_000


@pytest.fixture
def world(fleet: Fleet) -> Iterator[DriftWorld]:
    w = DriftWorld(fleet)
    yield w
    w.close()


def test_drift_reported_per_field_and_cleared_when_the_device_converges(world: DriftWorld) -> None:
    fleet, t, d = world.fleet, "t1", "d1"
    agent = world.agent(t, d)
    agent.cache.put("config", "main", {"color": "red", "calibration": 1.5, "firmware_pin": "1.0"})
    world.sync(t, d)
    assert world.drift(fleet.clock.ms) == {}  # nothing desired yet: the device's own values are no drift

    fleet.clock.ms += MIN
    edited_at = fleet.clock.ms
    world.edit(t, d, color='"blue"', calibration="2.0", firmware_pin='"1.2"')
    drift = world.drift(edited_at + 10 * MIN)
    assert {f: r["status"] for f, r in drift.items()} == {
        "color": "pending",  # lww: the newer central edit wins, the device has not applied it
        "firmware_pin": "pending",  # prefer_central
        "calibration": "accepted",  # prefer_device: the device's own value stands
    }
    color = drift["color"]
    assert (color["desired_value"], color["reported_value"], color["desired_origin"]) == (
        '"blue"',
        '"red"',
        "central",
    )
    assert color["age_s"] == 600.0  # since the central edit
    assert color["reported_revision"] is None and color["desired_revision"] >= 1
    assert (drift["calibration"]["desired_value"], drift["calibration"]["reported_value"]) == ("2.0", "1.5")
    accepted_since = drift["calibration"]["since"]

    # the device applies its document and syncs: its health row reports the revision
    fleet.clock.ms += MIN
    world.sync(t, d)
    assert agent.cache.get_state("config", "main") == {
        "color": "blue",
        "calibration": 1.5,
        "firmware_pin": "1.2",
    }
    drift = world.drift(fleet.clock.ms + 20 * MIN)
    assert set(drift) == {"calibration"}  # converged fields are cleared
    assert drift["calibration"]["since"] == accepted_since  # kept across refreshes
    assert drift["calibration"]["age_s"] == 11 * 60  # first seen 10 min after the edit, now 21 min after

    # a local edit after applying: lost under prefer_central -> drifted; won under lww -> accepted
    fleet.clock.ms += MIN
    agent.cache.put("config", "main", {"firmware_pin": "9.9", "color": "green"})
    world.sync(t, d)
    drift = world.drift(fleet.clock.ms)
    assert {f: r["status"] for f, r in drift.items()} == {
        "firmware_pin": "drifted",
        "color": "accepted",
        "calibration": "accepted",
    }
    assert (drift["firmware_pin"]["desired_value"], drift["firmware_pin"]["reported_value"]) == (
        '"1.2"',
        '"9.9"',
    )
    assert (drift["color"]["desired_value"], drift["color"]["reported_value"]) == ('"blue"', '"green"')

    # central sends the pin again: pending until the device applies it, then cleared
    fleet.clock.ms += MIN
    world.edit(t, d, firmware_pin='"1.3"')
    assert world.drift(fleet.clock.ms)["firmware_pin"]["status"] == "pending"
    fleet.clock.ms += MIN
    world.sync(t, d)
    assert agent.cache.get_state("config", "main")["firmware_pin"] == "1.3"
    assert set(world.drift(fleet.clock.ms)) == {"color", "calibration"}


def test_desired_values_of_any_origin_per_tenant_and_only_for_picking_rules(fleet: Fleet) -> None:
    """Rows as the merge and the publisher leave them: a value from a GitOps commit, the same device
    id in two tenants, a counter field (no single desired value), a value never published."""
    hlc = (fleet.clock.ms - 5 * MIN) << 16
    state = [  # tenant, device, field, value, hlc, node, origin, rule
        ("t1", "d1", "color", '"blue"', hlc, "central", "gitops:0123abc", "lww"),
        ("t2", "d1", "color", '"blue"', hlc, "central", "central", "lww"),
        ("t1", "d1", "boot_count", "3", hlc, "central", "central", "counter"),
        ("t1", "d1", "threshold", "7", hlc, "central", "central", "max"),
        ("t1", "d1", "mode", '"eco"', hlc, "central", "central", "prefer_central"),
    ]
    doc = {
        "document": {"state_edits": [{"namespace": "config", "key": "main", "field": "color", "hlc": hlc}]}
    }
    with fleet.lake.session() as con:
        con.executemany(
            "INSERT INTO device_state VALUES (?, ?, 'config', 'main', ?, ?, ?, ?, ?, ?, 1, 0)", state
        )
        con.executemany(
            "INSERT INTO desired_records VALUES (?, 'd1', 4, ?, now())",
            [("t1", json.dumps(doc)), ("t2", json.dumps(doc))],
        )
        # t2/d1 reported revision 4 (applied); t1/d1 only revision 3
        con.executemany(
            "INSERT INTO health (tenant_id, device_id, hlc, desired_revision) VALUES (?, 'd1', ?, ?)",
            [("t1", hlc + 1, 3), ("t2", hlc + 1, 4)],
        )
        # t1/d1 set mode to the desired value itself after its last applied document: converged
        con.execute(
            "INSERT INTO state_edits (tenant_id, device_id, namespace, key, field, value, origin, hlc) "
            "VALUES ('t1', 'd1', 'config', 'main', 'mode', '\"eco\"', 'device', ?)",
            [hlc + 2],
        )
    rows = drift_rows(fleet)
    assert {(r["tenant_id"], r["field"]): r["status"] for r in rows} == {
        ("t1", "color"): "pending",  # carried by revision 4, the device reports 3
        ("t1", "threshold"): "pending",  # never published: no revision carries it
    }
    color = next(r for r in rows if r["field"] == "color")
    assert (color["desired_origin"], color["desired_revision"], color["reported_revision"]) == (
        "gitops:0123abc",
        4,
        3,
    )
    assert next(r for r in rows if r["field"] == "threshold")["desired_revision"] is None
    assert color["age_s"] == 300.0


def drift_rows(fleet: Fleet) -> list[dict]:
    return config_drift.refresh(fleet.lake, datetime.fromtimestamp(fleet.clock.ms / 1000, UTC)).to_pylist()
