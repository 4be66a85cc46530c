"""apply_fleet_tree on a real lakehouse: what is sent, withdrawn and re-attributed between trees."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from edge_sync.rules import default_rules
from edgeplat.fleet_config.apply import apply_fleet_tree
from edgeplat.fleet_config.source import Commit
from edgeplat.inventory.claims import DeviceClaim
from edgeplat.inventory.store import fold_claims
from tests.support.fleet import Fleet

SCHEMA = json.dumps({"type": "object", "additionalProperties": {"type": "object"}})


def commit(n: int) -> Commit:
    return Commit(f"{n:040x}", "Dana", "dana@example.com", f"2026-12-0{n}T10:00:00+00:00", f"commit {n}")


def layer(**fields) -> str:
    return yaml.safe_dump({"values": {"config": {"pump": fields}}})


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    f = Fleet(tmp_path)
    claims = [
        DeviceClaim("t1", "d1", "operator", tags={"site": "north"}),
        DeviceClaim("t1", "d2", "operator", tags={"site": "south"}),
    ]
    f.lake.write(lambda c: fold_claims(c, claims, datetime.now(UTC)))
    return f


def apply(fleet: Fleet, n: int, **layers: str):
    files = {"fleet/schemas/config.json": SCHEMA}
    files.update({"fleet/" + p.replace("__", "/") + ".yaml": text for p, text in layers.items()})
    result = apply_fleet_tree(fleet.lake, files, commit(n), default_rules())
    assert result.status == "applied", result.errors
    return result


def state(fleet: Fleet) -> dict:
    rows = fleet.count("SELECT device_id, field, value, hlc FROM device_state")
    return {(d, f): (v, h) for d, f, v, h in rows}


def sources(fleet: Fleet) -> dict:
    rows = fleet.count('SELECT device_id, field, value, "commit", path, hlc FROM device_state_sources')
    return {(d, f): (v, c, p, h) for d, f, v, c, p, h in rows}


def test_moving_a_value_to_another_layer_sends_nothing_and_reattributes_it(fleet: Fleet) -> None:
    apply(fleet, 1, t1__tenant=layer(mode="eco"))
    before = state(fleet)
    result = apply(fleet, 2, t1__tenant=layer(mode="turbo"), t1__devices__d1=layer(mode="eco"))
    assert (result.edits, result.withdrawn, result.devices) == (1, 0, ["t1/d2"])
    after = state(fleet)
    assert after[("d1", "mode")] == before[("d1", "mode")]  # same value, same edit: nothing sent
    src = sources(fleet)
    assert src[("d1", "mode")] == (
        '"eco"',
        commit(2).sha,
        "fleet/t1/devices/d1.yaml",
        before[("d1", "mode")][1],
    )
    assert src[("d2", "mode")][:3] == ('"turbo"', commit(2).sha, "fleet/t1/tenant.yaml")


def test_a_selector_that_stops_matching_and_a_removed_tenant_withdraw_their_values(fleet: Fleet) -> None:
    north = yaml.safe_dump({"selector": {"site": "north"}, "values": {"config": {"pump": {"interval_s": 5}}}})
    apply(fleet, 1, t1__tenant=layer(mode="eco"), t1__tags__north=north)
    assert state(fleet)[("d1", "interval_s")][0] == "5"
    # the selector now asks for another site: d1 no longer matches
    apply(fleet, 2, t1__tenant=layer(mode="eco"), t1__tags__north=north.replace("north", "east"))
    assert state(fleet)[("d1", "interval_s")][0] == "null" and ("d1", "interval_s") not in sources(fleet)
    result = apply(fleet, 3)  # the tenant's folder is gone
    assert (result.edits, result.withdrawn) == (0, 2)
    assert {v for v, _ in state(fleet).values()} == {"null"} and sources(fleet) == {}
    assert apply(fleet, 4).edits == 0  # nothing left to withdraw
