"""Desired device state from a real git repository's fleet/ tree, through the real sensor, the
apply_fleet_config run, the central merge and the downlink, to real device agents."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from edge_sync.agent import DeviceAgent
from edge_sync.identity import PlatformSigner
from edgeplat.inventory.claims import DeviceClaim
from edgeplat.inventory.store import fold_claims
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.reconcile import list_batch_keys
from pipelines.jobs import apply_fleet_config
from pipelines.resources import embedded_sync_resources
from pipelines.sensors.fleet_config import fleet_config_sensor
from resources.gitops import GitOpsRepoResource
from tests.support.fleet import Fleet
from tests.support.git_repo import GitOpsRepo

TENANT = "t1"
TAGS = {"d1": {"site": "north"}, "d2": {"site": "south"}, "d3": {"site": "north"}}
SCHEMA = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"enum": ["eco", "turbo", "off"]},
            "interval_s": {"type": "integer", "minimum": 1},
            "firmware_pin": {"type": "string"},  # prefer_central in edge_sync/state_rules.yaml
            "calibration": {"type": "number"},  # prefer_device
        },
    },
}


def pump(**fields) -> str:
    return yaml.safe_dump({"values": {"config": {"pump": fields}}})


def tag(selector: dict, priority: int = 0, **fields) -> str:
    return yaml.safe_dump(
        {"selector": selector, "priority": priority, "values": {"config": {"pump": fields}}}
    )


class Platform:
    """The central side: lakehouse, store, signer, the sensor and the run, and the agents."""

    def __init__(self, root: Path) -> None:
        self.fleet = Fleet(root, clock=lambda: time.time_ns() // 1_000_000)  # the agents' clocks are real
        self.repo = GitOpsRepo(root / "git")
        self.resources = {
            **embedded_sync_resources(
                catalog=self.fleet.lake.config.catalog,
                data_path=self.fleet.lake.config.data_path,
                objects=str(self.fleet.store.root),
                keys=str(root / "keys"),
                registry=str(root / "devices"),
                platform_key=str(root / "platform.pem"),
            ),
            "gitops_repo": GitOpsRepoResource(repo=str(self.repo.origin), workdir=str(root / "clone")),
        }
        signer: PlatformSigner = self.resources["platform_signer"].get()  # creates the key
        self.defs = dg.Definitions(
            jobs=[apply_fleet_config], sensors=[fleet_config_sensor], resources=self.resources
        )
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None
        self.register(TAGS)
        self.agents = {
            d: DeviceAgent.for_device(
                TENANT,
                d,
                cache_path=root / f"{d}.db",
                cache_key=bytes(32),
                store=self.fleet.store,
                key_service=self.fleet.keys,
                identity=self.fleet.device(TENANT, d),
                platform_keys=signer.public_key_bytes(),
                sleep=lambda s: None,
            )
            for d in TAGS
        }

    def register(self, tags: dict[str, dict[str, str]]) -> None:
        claims = [DeviceClaim(TENANT, d, "operator", platform="edge_agent", tags=t) for d, t in tags.items()]
        self.fleet.lake.write(lambda c: fold_claims(c, claims, datetime.now(UTC)))

    def tick(self) -> list[dg.RunRequest]:
        """One sensor evaluation; returns its run requests (the cursor moves on)."""
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as ctx:
            result = fleet_config_sensor(ctx)
        self.cursor = result.cursor
        return list(result.run_requests or [])

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(apply_fleet_config.name).execute_in_process(
            run_config=request.run_config, instance=self.instance, raise_on_error=False
        )

    def apply(self) -> dict:
        """Tick, run the one requested run (it must succeed), and let every agent sync."""
        [request] = self.tick()
        res = self.run(request)
        assert res.success, res.all_events
        self.sync()
        return res.output_for_node("apply_fleet_config_op")

    def sync(self) -> None:
        """Every agent pulls its desired state and uploads; the platform ingests the uploads."""
        for agent in self.agents.values():
            assert agent.sync_once().ok
        ingest_objects(self.fleet.env(), list(list_batch_keys(self.fleet.env())))

    def on_device(self, device: str) -> dict:
        state = self.agents[device].cache.get_state("config", "pump")
        return {k: v for k, v in state.items() if v is not None}  # null: withdrawn

    def central(self, device: str) -> dict:
        rows = self.fleet.count(
            "SELECT field, value FROM device_state WHERE tenant_id = ? AND device_id = ? AND namespace = 'config' "
            "AND key = 'pump' AND value <> 'null'",
            [TENANT, device],
        )
        return {f: json.loads(v) for f, v in rows}

    def sources(self, device: str) -> dict:
        rows = self.fleet.count(
            'SELECT field, value, "commit", path, layer_kind, author FROM device_state_sources '
            "WHERE tenant_id = ? AND device_id = ?",
            [TENANT, device],
        )
        return {f: (json.loads(v), c, p, k, a) for f, v, c, p, k, a in rows}

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()


@pytest.fixture
def platform(tmp_path: Path):
    p = Platform(tmp_path)
    yield p
    p.close()


@pytest.mark.slow
def test_fleet_commits_reach_real_agents_traceably_and_an_invalid_commit_changes_nothing(platform) -> None:
    repo = platform.repo
    assert platform.tick() == []  # no fleet/ tree yet: nothing to do

    # c1: a tenant layer, a tag layer for site=north, and d2's own layer
    repo.write("fleet/schemas/config.json", json.dumps(SCHEMA))
    repo.write("fleet/t1/tenant.yaml", pump(mode="eco", interval_s=60, firmware_pin="1.0"))
    repo.write("fleet/t1/tags/north.yaml", tag({"site": "north"}, 10, interval_s=30, calibration=1.5))
    repo.write("fleet/t1/tags/fast.yaml", tag({"tier": "fast"}, 20, interval_s=15))  # no device yet
    repo.write("fleet/t1/devices/d2.yaml", pump(mode="turbo"))
    c1 = repo.commit("fleet: pumps")
    out = platform.apply()
    assert out["status"] == "applied" and out["edits"] == 3 + 4 + 4 and out["withdrawn"] == 0
    north = {"mode": "eco", "interval_s": 30, "firmware_pin": "1.0", "calibration": 1.5}
    want = {"d1": north, "d2": {"mode": "turbo", "interval_s": 60, "firmware_pin": "1.0"}, "d3": north}
    for d, values in want.items():
        assert platform.on_device(d) == values == platform.central(d)
    assert platform.sources("d2")["mode"] == (
        "turbo",
        c1,
        "fleet/t1/devices/d2.yaml",
        "device",
        "Dana <dana@example.com>",
    )
    assert platform.sources("d1")["interval_s"][1:4] == (c1, "fleet/t1/tags/north.yaml", "tag")
    assert platform.tick() == []  # nothing changed since: no run

    # The device d1 edits two fields itself, concurrently with the next commit.
    platform.agents["d1"].put("config", "pump", {"calibration": 2.0, "firmware_pin": "0.9"})

    # c2 (another author): change a tenant value, the tag's calibration and the pinned firmware
    repo.author("Lee", "lee@example.com")
    repo.write("fleet/t1/tenant.yaml", pump(mode="eco", interval_s=90, firmware_pin="1.1"))
    repo.write("fleet/t1/tags/north.yaml", tag({"site": "north"}, 10, interval_s=30, calibration=1.7))
    c2 = repo.commit("fleet: slower pumps, firmware 1.1")
    out = platform.apply()
    assert out["edits"] == 1 + 3 + 2 and out["withdrawn"] == 0  # d2 interval, every pin, calibration on d1 d3
    platform.sync()  # d1's own edit reaches the platform (it uploaded before its pull merged c2)
    # calibration is prefer_device: d1 keeps its own value; firmware_pin is prefer_central: git wins
    assert (
        platform.on_device("d1")
        == {**north, "calibration": 2.0, "firmware_pin": "1.1"}
        == platform.central("d1")
    )
    assert (
        platform.on_device("d3")
        == {**north, "calibration": 1.7, "firmware_pin": "1.1"}
        == platform.central("d3")
    )
    assert platform.on_device("d2") == {"mode": "turbo", "interval_s": 90, "firmware_pin": "1.1"}
    d1 = platform.sources("d1")
    assert d1["firmware_pin"][:2] == ("1.1", c2) and d1["firmware_pin"][4] == "Lee <lee@example.com>"
    assert d1["mode"][:2] == ("eco", c1)  # unchanged since c1: still traced to c1
    conflicts = platform.fleet.count(
        "SELECT field, rule, winner_origin FROM state_conflicts WHERE device_id = 'd1' ORDER BY field"
    )
    assert conflicts == [
        ("calibration", "prefer_device", "device"),
        ("firmware_pin", "prefer_central", "central"),
    ]

    # c3: the tag drops calibration, d2 loses its own layer: withdrawn and back to the tenant value
    repo.write("fleet/t1/tags/north.yaml", tag({"site": "north"}, 10, interval_s=30))
    repo.remove("fleet/t1/devices/d2.yaml")
    c3 = repo.commit("fleet: no calibration from git, d2 like the others")
    out = platform.apply()
    assert out["withdrawn"] == 2 and out["edits"] == 1  # calibration on d1, d3; d2's mode back to eco
    assert platform.on_device("d3") == {"mode": "eco", "interval_s": 30, "firmware_pin": "1.1"}
    assert platform.on_device("d1")["calibration"] == 2.0  # the device's own value was never git's
    assert platform.on_device("d2") == {"mode": "eco", "interval_s": 90, "firmware_pin": "1.1"}
    assert platform.sources("d2")["mode"][1:4] == (c3, "fleet/t1/tenant.yaml", "tenant")
    assert "calibration" not in platform.sources("d3")

    # c4 is invalid twice over: nothing changes anywhere, the run fails naming files and fixes
    before = (
        platform.fleet.snapshot(),
        {d: platform.sources(d) for d in TAGS},
        {d: platform.on_device(d) for d in TAGS},
    )
    repo.write("fleet/t1/tenant.yaml", pump(mode="warp", interval_s=90, firmware_pin="1.1"))
    repo.write("fleet/t1/tags/south.yaml", "selector: {site: [south\n")
    c4 = repo.commit("fleet: broken")
    [request] = platform.tick()
    res = platform.run(request)
    assert not res.success
    failure = next(e for e in res.all_events if e.is_failure).step_failure_data.user_failure_data
    errors = failure.metadata["errors"].value
    assert {e["path"] for e in errors} == {"fleet/t1/tenant.yaml", "fleet/t1/tags/south.yaml"}
    assert all(e["fix"] for e in errors)
    platform.sync()
    assert (
        platform.fleet.snapshot(),
        {d: platform.sources(d) for d in TAGS},
        {d: platform.on_device(d) for d in TAGS},
    ) == before
    assert platform.fleet.count(
        'SELECT status, json_array_length(errors) FROM fleet_config_commits WHERE "commit" = ?', [c4]
    ) == [("invalid", 2)]

    # c5 fixes it; then d2 joins tier fast in the inventory: the tag layers re-resolve it
    repo.write("fleet/t1/tenant.yaml", pump(mode="off", interval_s=90, firmware_pin="1.1"))
    repo.remove("fleet/t1/tags/south.yaml")
    c5 = repo.commit("fleet: pumps off")
    platform.apply()
    platform.register({"d2": {"tier": "fast"}})
    out = platform.apply()
    assert out["edits"] == 1 and out["devices"] == ["t1/d2"]
    final = {"mode": "off", "interval_s": 30, "firmware_pin": "1.1"}
    assert platform.on_device("d2") == {**final, "interval_s": 15} == platform.central("d2")
    assert platform.on_device("d3") == final == platform.central("d3")
    assert platform.on_device("d1") == {**final, "calibration": 2.0} == platform.central("d1")
    assert platform.sources("d2")["interval_s"][1:3] == (c5, "fleet/t1/tags/fast.yaml")

    # Every value git set on a device is the merged value, from the edit its source row names.
    traced = platform.fleet.count(
        "SELECT count(*), count(*) FILTER (WHERE s.hlc = d.hlc AND s.value = d.value) FROM device_state_sources s "
        "JOIN device_state d USING (tenant_id, device_id, namespace, key, field)"
    )
    assert traced == [(9, 9)]

    # Replaying the last run (a crash after it committed, say) changes nothing.
    snapshot = platform.fleet.snapshot()
    docs = {d: platform.fleet.store.get(f"tenant=t1/device={d}/desired.json") for d in TAGS}
    res = platform.run(
        dg.RunRequest(run_config={"ops": {"apply_fleet_config_op": {"config": {"commit": c5}}}})
    )
    assert res.success and res.output_for_node("apply_fleet_config_op")["edits"] == 0
    assert platform.fleet.snapshot() == snapshot
    assert {d: platform.fleet.store.get(f"tenant=t1/device={d}/desired.json") for d in TAGS} == docs
    # An older commit's run that queued behind a newer one is skipped, never moves devices back.
    res = platform.run(
        dg.RunRequest(run_config={"ops": {"apply_fleet_config_op": {"config": {"commit": c2}}}})
    )
    assert res.output_for_node("apply_fleet_config_op")["status"] == "superseded"
    assert platform.fleet.snapshot() == snapshot
