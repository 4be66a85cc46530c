"""Device inventory: Greengrass core devices and IoT Edge devices imported from the platform doubles
(paginated, throttled), folded into ``devices`` with the source of each field, conflicts flagged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from assets.fleet.inventory import device_inventory
from edgeplat.inventory.claims import DeviceClaim
from edgeplat.inventory.sources import Unassigned, greengrass_claims, iot_edge_claims
from edgeplat.inventory.store import fold_claims, list_devices, show_device
from edgeplat.inventory.targeting import empty_target_reason
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from resources.backends import FleetBackendResource
from resources.lakehouse import LakehouseResource
from tests.support.iothub_double import CONNECTION_STRING
from tests.support.moto_server import MOTO_CREDENTIALS
from tests.support.platforms import Platforms, running_platforms
from tests.support.rollouts import small_spec

pytestmark = pytest.mark.services

NOW = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
GG_DEVICES = 130  # two ListCoreDevices pages of 100
EDGE_DEVICES = 120  # three registry query pages of 50


@pytest.fixture(scope="module")
def platforms(moto_server: str) -> Iterator[Platforms]:
    with running_platforms(moto_server) as p:
        p.iot.create_thing_group(thingGroupName="inv-eu-west")
        for i in range(GG_DEVICES):
            thing = p.add_core_device("acme", f"inv-gg-{i:03d}", installed="2.0.0", site=f"site-{i % 3}")
            if i % 10 == 0:
                p.iot.add_thing_to_thing_group(thingGroupName="inv-eu-west", thingName=thing)
        p.add_core_device("acme", "inv-dual")  # also an IoT Edge device below
        p.iot.create_thing(thingName="inv-orphan")  # a core device whose thing names no tenant
        p.gg_double.add_core_device("inv-orphan")
        for i in range(EDGE_DEVICES):
            p.hub.add_device(
                f"inv-edge-{i:03d}", tags={"tenant": "globex", "channel": "beta" if i % 2 else "stable"}
            )
        p.hub.add_device("inv-dual", tags={"tenant": "acme"}, connected=False)
        p.hub.add_device("inv-leaf", tags={"tenant": "globex"}, edge=False)  # not an IoT Edge device
        yield p


@pytest.fixture
def lake(tmp_path: Path) -> Lakehouse:
    (tmp_path / "data").mkdir()
    lake = Lakehouse(LakehouseConfig(f"sqlite:{tmp_path}/catalog.sqlite", f"{tmp_path}/data/"))
    lake.ensure_schema()
    return lake


def _import(p: Platforms, lake: Lakehouse, seen: Unassigned) -> dict:
    claims = [
        *greengrass_claims(p.iot, p.gg, seen=seen),
        *iot_edge_claims(p.hub_backend.registry, page_size=50, seen=seen),
    ]
    return lake.write(lambda con: fold_claims(con, claims, NOW), what="inventory").as_dict()


def test_both_platforms_import_with_pages_throttling_and_a_device_on_both(platforms, lake):
    platforms.gg_double.throttle(2)  # botocore's standard retry mode retries them
    platforms.hub.throttle(2)  # msrest's Retry, with 429 added by the backend
    seen = Unassigned()
    report = _import(platforms, lake, seen)
    assert platforms.gg_double.throttled == 0 and platforms.hub.throttled == 0

    assert report["new"] == GG_DEVICES + EDGE_DEVICES + 1
    assert report["by_source"] == {"greengrass": GG_DEVICES + 1, "iot_hub": EDGE_DEVICES + 1}
    assert seen.devices == {"greengrass": ["inv-orphan"]}  # no tenant: left out, not invented
    assert seen.pages["iot_hub"] == 3
    assert len(platforms.gg_double.calls("ListCoreDevices")) == 2

    with lake.session(read_only=True) as con:
        gg = show_device(con, "acme", "inv-gg-010")
        edge = show_device(con, "globex", "inv-edge-001")
        dual = show_device(con, "acme", "inv-dual")
        listed = list_devices(con, conflicts_only=True)
        leaf = show_device(con, "globex", "inv-leaf")
    assert gg["platform"] == "greengrass" and gg["connectivity"] == "healthy"
    assert gg["tags"] == {"site": "site-1", "thing_group.inv-eu-west": "true"}
    assert gg["sources"]["platform"] == "greengrass" and gg["sources"]["tags.site"] == "greengrass"
    assert gg["last_seen"] is not None
    assert edge["platform"] == "iot_edge" and edge["tags"] == {"channel": "beta"}
    assert edge["connectivity"] == "connected" and edge["sources"]["last_seen"] == "iot_hub"
    assert leaf is None

    # on two platforms: kept once, flagged with both claims
    assert [r["device_id"] for r in listed] == ["inv-dual"]
    assert dual["conflicts"] == [
        {
            "field": "platform",
            "claims": {"greengrass": "greengrass", "iot_hub": "iot_edge"},
            "kept": "greengrass",
        }
    ]

    again = _import(platforms, lake, Unassigned())  # nothing changed on the platforms
    assert again["new"] == 0 and again["changed"] == 0 and again["conflicts"] == 1


def test_a_device_claim_never_overrides_its_platform_and_the_operator_wins(platforms, lake):
    _import(platforms, lake, Unassigned())
    enrolled = DeviceClaim(
        "globex", "inv-edge-002", "edge_agent", platform="edge_agent", tags={"channel": "beta"}
    )
    operator = DeviceClaim("acme", "inv-dual", "operator", platform="iot_edge")
    lake.write(lambda con: fold_claims(con, [enrolled, operator], NOW), what="claims")
    with lake.session(read_only=True) as con:
        edge = show_device(con, "globex", "inv-edge-002")
        dual = show_device(con, "acme", "inv-dual")
    assert edge["platform"] == "iot_edge"  # the hub's word stands over the device's
    conflict = {c["field"]: c for c in edge["conflicts"]}
    assert conflict["platform"]["claims"] == {"edge_agent": "edge_agent", "iot_hub": "iot_edge"}
    assert conflict["tags.channel"]["kept"] == "stable"
    assert dual["platform"] == "iot_edge" and dual["sources"]["platform"] == "operator"


def test_a_spec_that_selects_nothing_names_the_filter(platforms, lake):
    _import(platforms, lake, Unassigned())
    with lake.session(read_only=True) as con:
        assert empty_target_reason(con, small_spec(target={"tenants": ["acme", "globex"]})) is None
        no_tenant = empty_target_reason(con, small_spec(target={"tenants": ["initech"]}))
        no_tag = empty_target_reason(
            con, small_spec(target={"tenants": ["globex"], "tags": {"channel": "canary"}})
        )
        edge_only = small_spec(
            target={"tenants": ["acme"]},
            release={
                "name": "app",
                "version": "3.0.0",
                "iot_edge": {"module": "app", "image": "acr.io/app:3"},
            },
        )
        no_platform = empty_target_reason(con, edge_only)
    assert "target.tenants ['initech'] has no device" in no_tenant and "acme" in no_tenant
    assert "tag channel in ['canary'] matches none of the 120 devices" in no_tag
    assert "beta 60" in no_tag and "stable 60" in no_tag
    assert no_platform.startswith("platforms ['iot_edge', 'edge_agent']") and "greengrass 131" in no_platform
    assert json.dumps(no_platform)  # plain text for the run's metadata


def test_the_device_inventory_asset_imports_from_the_configured_platforms(platforms, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOTO_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_CREDENTIALS["aws_secret_access_key"])
    (tmp_path / "data").mkdir()
    lake = LakehouseResource(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/data/")
    lake.get().ensure_schema()
    backend = FleetBackendResource(
        kinds="greengrass,azure_iot_edge",
        iot_endpoint_url=platforms.iot.meta.endpoint_url,
        greengrass_endpoint_url=platforms.gg.meta.endpoint_url,
        iothub_connection_string=CONNECTION_STRING,
        iothub_base_url=platforms.hub_backend.registry.protocol.config.base_url,
    )
    result = dg.materialize([device_inventory], resources={"lakehouse": lake, "fleet_backend": backend})
    meta = result.asset_materializations_for_node("device_inventory")[0].metadata
    assert meta["new"].value == GG_DEVICES + EDGE_DEVICES + 1 and meta["conflicts"].value == 1
    assert meta["without_tenant"].value == {"greengrass": ["inv-orphan"]}
