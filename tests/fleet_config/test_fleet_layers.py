"""Layering and validation of a fleet/ tree, without git or a lakehouse."""

from __future__ import annotations

import json

import yaml

from edge_sync.rules import default_rules
from edgeplat.fleet_config.layers import LayerKind, parse_tree
from edgeplat.fleet_config.resolve import check

SCHEMA = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "mode": {"enum": ["eco", "turbo", "off"]},
            "interval_s": {"type": "integer", "minimum": 1},
            "firmware_pin": {"type": "string"},
        },
        "required": ["mode"],
    },
}
INVENTORY = {
    "t1": {
        "d1": {"site": "north", "hw": "v2"},
        "d2": {"site": "south", "hw": "v2"},
        "d3": {"site": "north", "hw": "v1"},
    }
}


def tree(**layers) -> dict[str, str]:
    files = {"fleet/schemas/config.json": json.dumps(SCHEMA)}
    for path, body in layers.items():
        files["fleet/" + path.replace("__", "/") + ".yaml"] = (
            body if isinstance(body, str) else yaml.safe_dump(body)
        )
    return files


def values(**fields) -> dict:
    return {"values": {"config": {"pump": fields}}}


def resolved(files: dict[str, str]):
    t = parse_tree(files)
    out = check(t, INVENTORY, default_rules())
    return out, t.errors


def test_most_specific_layer_wins_field_by_field() -> None:
    files = tree(
        t1__tenant=values(mode="eco", interval_s=60, firmware_pin="1.0"),
        t1__tags__north={"selector": {"site": "north"}, "priority": 10, **values(interval_s=30)},
        t1__tags__v2={"selector": {"hw": ["v2", "v3"]}, "priority": 5, **values(interval_s=45, mode="turbo")},
        t1__devices__d1=values(mode="off"),
    )
    out, errors = resolved(files)
    assert errors == []
    view = {d: {k[2]: (json.loads(s.value), s.kind) for k, s in r.items()} for d, r in out["t1"].items()}
    # d1: north (prio 10) beats v2 (prio 5) for interval_s; its own layer beats both for mode
    assert view["d1"] == {
        "mode": ("off", LayerKind.DEVICE),
        "interval_s": (30, LayerKind.TAG),
        "firmware_pin": ("1.0", LayerKind.TENANT),
    }
    assert view["d2"] == {
        "mode": ("turbo", LayerKind.TAG),
        "interval_s": (45, LayerKind.TAG),
        "firmware_pin": ("1.0", LayerKind.TENANT),
    }
    assert view["d3"]["interval_s"] == (30, LayerKind.TAG) and view["d3"]["mode"] == ("eco", LayerKind.TENANT)
    assert out["t1"]["d1"][("config", "pump", "interval_s")].path == "fleet/t1/tags/north.yaml"


def test_equal_priorities_break_ties_by_layer_name_not_listing_order() -> None:
    a = {"selector": {"hw": "v2"}, **values(mode="eco")}
    b = {"selector": {"hw": "v2"}, **values(mode="turbo")}
    out1, _ = resolved(tree(t1__tags__alpha=a, t1__tags__beta=b))
    out2, _ = resolved(tree(t1__tags__beta=b, t1__tags__alpha=a))
    for out in (out1, out2):
        src = out["t1"]["d2"][("config", "pump", "mode")]
        assert (src.value, src.path) == ('"turbo"', "fleet/t1/tags/beta.yaml")


def test_every_error_names_its_file_and_fix() -> None:
    files = tree(
        t1__tenant=values(mode="eco"),
        t1__tags__broken="selector: [unclosed\n",
        t1__tags__empty={"selector": {}, **values(mode="eco")},
        t1__devices__d2=values(mode="warp"),
        t1__devices__d9=values(mode="eco"),
        t9__tenant=values(mode="eco"),
    )
    files["fleet/t1/notes.yaml"] = "x: 1\n"
    files["fleet/t1/devices/d3.yaml"] = yaml.safe_dump({"values": {"net": {"wifi": {"ssid": "x"}}}})
    files["fleet/t1/devices/d1.yaml"] = yaml.safe_dump({"values": {"config": {"pump": {"boot_count": 1}}}})
    _, errors = resolved(files)
    by_path = {}
    for e in errors:
        by_path.setdefault(e.path, []).append(e)
        assert e.fix, e
    assert "not valid YAML" in by_path["fleet/t1/tags/broken.yaml"][0].message
    assert "selector" in by_path["fleet/t1/tags/empty.yaml"][0].message
    assert any("'warp' is not one of" in e.message for e in by_path["fleet/t1/devices/d2.yaml"])
    assert "not in the inventory" in by_path["fleet/t1/devices/d9.yaml"][0].message
    assert "has no device in the inventory" in by_path["fleet/t9/"][0].message
    assert "not where a layer file can be" in by_path["fleet/t1/notes.yaml"][0].message
    assert "fleet/schemas/net.json" in by_path["fleet/t1/devices/d3.yaml"][0].fix
    # boot_count merges by counter: git could never withdraw it
    assert any("'counter'" in e.message for e in by_path["fleet/t1/devices/d1.yaml"])


def test_a_layer_may_be_partial_but_each_device_must_resolve_to_a_complete_record() -> None:
    # interval_s alone is fine in a tag layer (mode comes from elsewhere) ...
    ok = tree(
        t1__tenant=values(mode="eco"), t1__tags__north={"selector": {"site": "north"}, **values(interval_s=5)}
    )
    assert resolved(ok)[1] == []
    # ... but a device left without the required mode is refused, naming the layer that set the record
    missing = tree(t1__tags__north={"selector": {"site": "north"}, **values(interval_s=5)})
    _, errors = resolved(missing)
    assert {e.path for e in errors} == {"fleet/t1/tags/north.yaml"}
    assert all("'mode' is a required property" in e.message for e in errors)
    # d1 and d3 resolve alike: one error names both
    assert [e.message.split(":")[0] for e in errors] == ["resolved for devices t1/d1, t1/d3"]


def test_nulls_and_non_json_values_are_refused_with_the_way_to_withdraw() -> None:
    _, errors = resolved(tree(t1__tenant="values:\n  config:\n    pump:\n      mode: null\n"))
    assert "delete its line" in errors[0].message
    _, errors = resolved(tree(t1__tenant="values:\n  config:\n    pump:\n      mode: 2026-01-01\n"))
    assert "not a JSON value" in errors[0].message


def test_a_fleet_resolving_alike_gets_one_error_not_one_per_device() -> None:
    inventory = {"t1": {f"d{i}": {"site": "north"} for i in range(40)}}
    t = parse_tree(tree(t1__tags__north={"selector": {"site": "north"}, **values(interval_s=5)}))
    check(t, inventory, default_rules())
    [err] = t.errors
    assert err.message.startswith("resolved for devices t1/d0, t1/d1, t1/d10, t1/d11, t1/d12 and 35 more:")
    assert "'mode' is a required property" in err.message
