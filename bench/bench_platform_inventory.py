"""Device inventory sync and one platform-observation pass, each against a sensor tick (60 s).

1. ``inventory_sync_vs_tick``: 100,000 devices (quick: 10,000), half Greengrass core devices
   (greengrassv2 double; their IoT things and a thing group on the IoT registry double, which pages
   in O(page) as the service does: moto re-scans its registry per page, 37 s for 50,000 things),
   half IoT Edge devices (IoT Hub double): every page read through the real clients
   (``edgeplat.inventory.sources``), claims folded into a DuckLake ``devices`` table
   (``fold_claims``), then a second sync of the unchanged fleet (what the hourly schedule
   pays in steady state).
2. ``observation_pass_vs_tick``: one pass over a 10,000-device phase (quick: 2,000), half on each
   platform, every device just applied the release (the worst case: each Greengrass device
   needs its installed components read), through ``GreengrassObserver`` / ``IotEdgeObserver``
   under a ``PassBudget`` of 60 s, facts folded into ``devices``; and the next pass, nothing
   changed (list pages only).

Both against Dagster's default sensor tick of 60 s: the ratio must stay <= 1 (target 0.75,
room for a loaded machine). The doubles serve loopback HTTP: the network of a real account
is not in these figures, the client, paging, parsing and lakehouse costs are.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.config import Config

from bench.harness import Result
from edgeplat.backends.azure_iot_edge import AzureIotEdgeBackend
from edgeplat.backends.base import DeviceRef
from edgeplat.backends.feedback import PassBudget, fold_facts
from edgeplat.backends.feedback_greengrass import GreengrassObserver
from edgeplat.backends.feedback_iot_edge import IotEdgeObserver
from edgeplat.backends.greengrass import default_thing_name
from edgeplat.inventory.sources import Unassigned, greengrass_claims, iot_edge_claims
from edgeplat.inventory.store import fold_claims
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from tests.support.greengrass_double import GreengrassDouble, _component, running_greengrass_double
from tests.support.iot_registry_double import IotRegistryDouble, running_iot_registry_double
from tests.support.iothub_double import CONNECTION_STRING, IotHubDouble, running_iothub_double

TICK_S = 60.0
ACCOUNT, REGION = "123456789012", "us-east-1"
COMPONENT, MODULE = "com.acme.App", "app"


def _lake(root: Path) -> Lakehouse:
    (root / "data").mkdir(parents=True)
    lake = Lakehouse(LakehouseConfig(f"sqlite:{root}/catalog.sqlite", f"{root}/data/"))
    lake.ensure_schema()
    return lake


def _seed(
    iot: IotRegistryDouble, gg: GreengrassDouble, hub: IotHubDouble, n_gg: int, n_edge: int, version: str
) -> list[DeviceRef]:
    """Things, core devices and twins straight into the doubles' state (seeding is not measured)."""
    fleet = iot.groups.setdefault("fleet-eu", [])
    now = time.time()
    refs = []
    for i in range(n_gg):
        d = DeviceRef(f"t{i % 5}", f"gg-{i:06d}", "greengrass")
        thing = default_thing_name(d)
        iot.things[thing] = {"tenant_id": d.tenant_id, "device_id": d.device_id}
        if i % 10 == 0:
            fleet.append(thing)
        gg.core_devices[thing] = {
            "coreDeviceThingName": thing,
            "status": "HEALTHY",
            "lastStatusUpdateTimestamp": now,
        }
        gg.installed[thing] = {COMPONENT: _component(COMPONENT, version, "RUNNING")}
        refs.append(d)
    for i in range(n_edge):
        d = DeviceRef(f"t{i % 5}", f"edge-{i:06d}", "iot_edge")
        hub.twins[d.device_id] = {
            "deviceId": d.device_id,
            "etag": "e",
            "version": 1,
            "status": "enabled",
            "connectionState": "Connected",
            "lastActivityTime": "2026-09-01T12:00:00Z",
            "tags": {"tenant": d.tenant_id, "channel": "stable"},
            "properties": {"desired": {}, "reported": {}},
            "capabilities": {"iotEdge": True},
        }
        hub.module_twins[(d.device_id, "$edgeAgent")] = {
            "deviceId": d.device_id,
            "moduleId": "$edgeAgent",
            "properties": {
                "desired": {},
                "reported": {
                    "modules": {
                        MODULE: {"settings": {"image": f"acr.io/app:{version}"}, "runtimeStatus": "running"}
                    }
                },
            },
        }
        refs.append(d)
    return refs


def _clients(iot_url: str, gg_url: str, hub_url: str):
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    config = Config(retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=16)
    iot = session.client("iot", region_name=REGION, endpoint_url=iot_url, config=config)
    ggc = session.client("greengrassv2", region_name=REGION, endpoint_url=gg_url, config=config)
    hub = AzureIotEdgeBackend.from_connection_string(CONNECTION_STRING, base_url=hub_url)
    return iot, ggc, hub.registry


def run(quick: bool) -> list[Result]:
    n_inv = 10_000 if quick else 100_000
    n_phase = 2_000 if quick else 10_000
    root = Path(tempfile.mkdtemp(prefix="bench-inventory-"))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        results = []
        # ---------------------------------------------------------------- 1. inventory sync
        with (
            running_iot_registry_double() as (iot_url, iot_double),
            running_greengrass_double() as (gg_url, gg),
            running_iothub_double() as (hub_url, hub),
        ):
            _seed(iot_double, gg, hub, n_inv // 2, n_inv - n_inv // 2, "2.0.0")
            iot, ggc, registry = _clients(iot_url, gg_url, hub_url)
            lake = _lake(root / "inv")
            times = []
            for _ in range(2):
                seen = Unassigned()
                t0 = time.perf_counter()
                claims = [*greengrass_claims(iot, ggc, seen=seen), *iot_edge_claims(registry, seen=seen)]
                rep = lake.write(lambda con, c=claims: fold_claims(con, c, datetime.now(UTC)), what="bench")
                times.append(time.perf_counter() - t0)
                assert rep.claimed == n_inv, rep.as_dict()
            pages = sum(seen.pages.values())
            results.append(
                Result(
                    "inventory_sync_vs_tick",
                    times[0],
                    "s",
                    "a 60 s sensor tick",
                    TICK_S,
                    0.75,
                    higher_is_better=False,
                    note=f"{n_inv:,} devices (half Greengrass, half IoT Edge), {pages} pages; first sync "
                    f"{times[0]:.1f} s (all rows new), unchanged re-sync {times[1]:.1f} s",
                )
            )
            iot.close()
            ggc.close()
        # ---------------------------------------------------------------- 2. observation pass
        with (
            running_iot_registry_double() as (iot_url, iot_double),
            running_greengrass_double() as (gg_url, gg),
            running_iothub_double() as (hub_url, hub),
        ):
            refs = _seed(iot_double, gg, hub, n_phase // 2, n_phase - n_phase // 2, "3.0.0")
            iot, ggc, registry = _clients(iot_url, gg_url, hub_url)
            lake = _lake(root / "obs")
            known = [*greengrass_claims(iot, ggc), *iot_edge_claims(registry)]  # the phase's devices exist
            lake.write(lambda con: fold_claims(con, known, datetime.now(UTC)), what="bench")
            gg_obs = GreengrassObserver(ggc, thing_name=default_thing_name, workers=8)
            edge_obs = IotEdgeObserver(registry, page_size=1000)
            gg_refs = [r for r in refs if r.platform == "greengrass"]
            edge_refs = [r for r in refs if r.platform == "iot_edge"]
            passes = []
            for _ in range(2):
                budget = PassBudget(max_calls=100_000, max_seconds=TICK_S)
                t0 = time.perf_counter()
                a = gg_obs.observe(gg_refs, component=COMPONENT, desired_version="3.0.0", budget=budget)
                b = edge_obs.observe(
                    edge_refs, module=MODULE, desired_image="acr.io/app:3.0.0", versions={}, budget=budget
                )
                facts = a.facts + b.facts
                lake.write(lambda con, f=facts: fold_facts(con, f), what="bench")
                passes.append((time.perf_counter() - t0, budget.calls, len(a.left) + len(b.left)))
                assert len(facts) == n_phase and all(f.acknowledged for f in facts)
            (t1, calls1, left1), (t2, calls2, _) = passes
            results.append(
                Result(
                    "observation_pass_vs_tick",
                    t1,
                    "s",
                    "a 60 s sensor tick",
                    TICK_S,
                    0.75,
                    higher_is_better=False,
                    note=f"{n_phase:,}-device phase (half each platform), all just updated: {calls1:,} calls, "
                    f"{left1} left for the next pass; the next pass (nothing changed) {t2:.1f} s, {calls2} calls",
                )
            )
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)
