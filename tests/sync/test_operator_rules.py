"""Operator rules end to end: central merge and a real device agent merge under the same rules.

The rules file and its resolver module live in the test's tmp dir (outside the package); the
central ingest and central edits merge with them, the desired-state document carries them to
a real ``DeviceAgent``, whose downlink adopts them, and every row written after the change
carries the new ``rules_version`` on both sides.
"""

from __future__ import annotations

import dataclasses
import json
import secrets

import dagster as dg
import pytest

from edge_sync.agent import DeviceAgent
from edge_sync.batch_keys import BATCH_SUFFIX
from edge_sync.desired import decode, desired_key
from edge_sync.hlc import CENTRAL_NODE, HybridLogicalClock
from edge_sync.identity import PlatformSigner
from edge_sync.rules import RulesError, load_rules
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import LakehouseDesiredRecords
from edgeplat.sync.central_edits import CentralEdit, apply_central_edits
from edgeplat.sync.ingest import ingest_objects
from pipelines.definitions import sync_definitions
from pipelines.resources import embedded_sync_resources
from resources.state_rules import StateRulesResource
from tests.support.fleet import Fleet
from tests.support.operator_rules import SMALLEST, unique, write_resolver_module, write_rules

TENANT, DEVICE = "t1", "d1"


def _agent(fleet: Fleet, platform: PlatformSigner) -> DeviceAgent:
    identity = fleet.device(TENANT, DEVICE)
    (fleet.root / "device").mkdir()
    return DeviceAgent.for_device(
        TENANT,
        DEVICE,
        cache_path=fleet.root / "device" / "cache.duckdb",
        cache_key=secrets.token_bytes(32),
        wall_ms=fleet.clock,
        store=fleet.store,
        key_service=fleet.keys,
        identity=identity,
        platform_keys=platform.public_key_bytes(),
        sleep=lambda s: None,
    )


def _sync_and_ingest(fleet: Fleet, agent: DeviceAgent, env) -> dict:
    report = agent.sync_once()
    assert report.ok, report.errors
    page = fleet.store.list(f"tenant={TENANT}/", limit=1000)
    keys = [o.key for o in page.objects if o.key.endswith(BATCH_SUFFIX)]
    ingest = ingest_objects(env, keys)
    assert not ingest.quarantined, ingest.quarantined
    return report.downlink or {}


def _central(fleet: Fleet) -> dict[str, tuple]:
    return {
        f: (v, o, rv)
        for f, v, o, rv in fleet.count(
            "SELECT field, value, origin, rules_version FROM device_state WHERE device_id = ?", [DEVICE]
        )
    }


def test_device_and_platform_merge_with_the_operators_rules_and_version(fleet: Fleet, monkeypatch) -> None:
    platform = PlatformSigner.generate()
    agent = _agent(fleet, platform)
    try:
        # Before: the packaged rules (version 1) on both sides.
        agent.put("config", "main", {"threshold": 5})
        fleet.clock.ms += 1000
        _sync_and_ingest(fleet, agent, fleet.env())
        assert _central(fleet)["threshold"] == ("5", "device", 1)

        # The operator's rules: version 2, config.label folded by a resolver from their own module.
        name, module = unique("smallest"), unique("operator_resolvers")
        write_resolver_module(fleet.root / "operator" / "site", module, SMALLEST.format(name=name))
        monkeypatch.syspath_prepend(str(fleet.root / "operator" / "site"))
        rules = load_rules(
            write_rules(
                fleet.root / "operator",
                version=2,
                label_rule=f"custom:{name}",
                resolvers=[{"module": module}],
            )
        )
        env = dataclasses.replace(fleet.env(), rules=rules)

        agent.put("config", "main", {"label": "beta", "threshold": 7})
        fleet.clock.ms += 1000
        _sync_and_ingest(fleet, agent, env)
        publisher = DesiredStatePublisher(
            fleet.store,
            platform,
            HybridLogicalClock(CENTRAL_NODE, wall_ms=fleet.clock),
            records=LakehouseDesiredRecords(fleet.lake),
            rules=rules,
        )
        fleet.clock.ms += 1000
        # The packaged rule (custom:longest) would keep "gamma"; the operator's resolver keeps "beta".
        apply_central_edits(
            fleet.lake,
            [CentralEdit(TENANT, DEVICE, "config", "main", "label", '"gamma"')],
            rules,
            publish=publisher.add_state_edits,
            wall=fleet.clock,
        )
        downlink = _sync_and_ingest(fleet, agent, env)

        assert downlink["status"] == "applied" and downlink["rules_version"] == 2, downlink
        assert downlink["rules_error"] is None
        central = _central(fleet)
        assert central["label"] == ('"beta"', "central", 2)  # stamped by the latest edit, the central one
        assert central["threshold"] == ("7", "device", 2)
        conflicts = fleet.count(
            "SELECT field, loser_value, loser_origin, rules_version FROM state_conflicts WHERE device_id = ?",
            [DEVICE],
        )
        assert conflicts == [("label", '"gamma"', "central", 2)]
        on_device = {
            r["field"]: r["value"]
            for r in agent.cache.state_table().to_pylist()
            if r["namespace"] == "config"
        }
        assert on_device["label"] == central["label"][0]  # the device merged with the same resolver
        status = agent.status()["state_rules"]
        assert status == {"version": 2, "content_hash": rules.content_hash, "refused": None}
        assert {rv for _, _, rv in central.values()} - {1} == {status["version"]}
    finally:
        agent.close()


def test_changed_rules_under_an_unchanged_version_are_refused_by_the_central_merge(fleet: Fleet) -> None:
    first = load_rules(write_rules(fleet.root / "a", version=2, label_rule="lww"))
    changed = load_rules(write_rules(fleet.root / "b", version=2, label_rule="max"))
    edit = [CentralEdit(TENANT, DEVICE, "config", "main", "label", "1")]
    apply_central_edits(fleet.lake, edit, first, wall=fleet.clock)
    with pytest.raises(
        RulesError, match="state rules version 2 was used by the central merge with other content"
    ):
        apply_central_edits(fleet.lake, edit, changed, wall=fleet.clock)
    bumped = load_rules(write_rules(fleet.root / "c", version=3, label_rule="max"))
    apply_central_edits(fleet.lake, edit, bumped, wall=fleet.clock)
    assert fleet.count("SELECT DISTINCT rules_version FROM device_state") == [(3,)]


def _definitions(fleet: Fleet, rules_path: str = "") -> dg.Definitions:
    resources = embedded_sync_resources(
        catalog=fleet.lake.config.catalog,
        data_path=fleet.lake.config.data_path,
        objects=str(fleet.store.root),
        keys=str(fleet.root / "keys"),
        registry=str(fleet.root / "devices"),
        platform_key=str(fleet.root / "platform.pem"),
    )
    resources["state_rules"] = StateRulesResource(path=rules_path)
    return sync_definitions(resources)


def test_the_publish_job_sends_a_rules_change_to_every_document(fleet: Fleet) -> None:
    edit = {
        "tenant_id": TENANT,
        "device_id": DEVICE,
        "namespace": "config",
        "key": "main",
        "fields": {"x": "1"},
    }
    with dg.instance_for_test() as instance:
        job = _definitions(fleet).resolve_job_def("edit_device_state")
        assert job.execute_in_process(
            run_config={"ops": {"apply_state_edits": {"config": edit}}}, instance=instance
        ).success
        signed = json.loads(fleet.store.get(desired_key(TENANT, DEVICE)))
        assert "state_rules" not in signed["document"]  # packaged rules: what older agents accept

        path = write_rules(fleet.root / "operator", version=5, label_rule="max")
        publish = _definitions(fleet, str(path)).resolve_job_def("publish_state_rules")
        first = publish.execute_in_process(instance=instance)
        again = publish.execute_in_process(instance=instance)
    assert first.output_for_node("publish_rules_to_devices") == {TENANT: 1}
    assert again.output_for_node("publish_rules_to_devices") == {TENANT: 0}
    signer = PlatformSigner.load(fleet.root / "platform.pem")
    doc = decode(
        fleet.store.get(desired_key(TENANT, DEVICE)),
        platform_keys=signer.public_key_bytes(),
        tenant_id=TENANT,
        device_id=DEVICE,
    )
    assert doc.state_rules is not None and doc.state_rules.version == 5
    assert [e.field for e in doc.state_edits] == ["x"]  # the rest of the document is kept
