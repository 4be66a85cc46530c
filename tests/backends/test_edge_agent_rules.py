"""Release documents of the edge_agent backend carry the conflict rules in force: a device whose
first document is a release merges with the operator's rules (a real downlink adopts them), and
while the packaged rules are in force the document leaves them out, as older agents expect."""

from __future__ import annotations

import json
from pathlib import Path

from edge_sync.cache import DeviceCache
from edge_sync.desired import decode, desired_key
from edge_sync.rules import load_rules
from resources.backends import FleetBackendResource
from resources.keys import PlatformSignerResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource
from tests.support.downlink import recording_downlink
from tests.support.edge_agent import V2, devs
from tests.support.operator_rules import write_rules


def backend_resource(root: Path, state_rules: StateRulesResource) -> FleetBackendResource:
    (root / "lake").mkdir(parents=True)
    return FleetBackendResource(
        kind="edge_agent",
        object_store=ObjectStoreResource(url=str(root / "store")),
        platform_signer=PlatformSignerResource(path=str(root / "platform.pem"), create_if_missing=True),
        lakehouse=LakehouseResource(catalog=f"sqlite:{root}/catalog.sqlite", data_path=f"{root}/lake/"),
        state_rules=state_rules,
    )


def test_a_release_is_the_first_document_and_carries_the_operators_rules(tmp_path: Path) -> None:
    path = write_rules(tmp_path / "operator", version=5, label_rule="max")
    backend = backend_resource(tmp_path, StateRulesResource(path=str(path))).get()
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0)
    signer = backend.publisher.signer
    doc = decode(
        backend.store.get(desired_key("t1", "d1")),
        platform_keys=signer.public_key_bytes(),
        tenant_id="t1",
        device_id="d1",
    )
    rules = load_rules(path)
    assert (doc.release.version, doc.state_rules.version) == ("2.0.0", 5)
    assert doc.state_rules.content_hash == rules.content_hash

    cache = DeviceCache.open(tmp_path / "d1.db", tenant_id="t1", device_id="d1", key=bytes(32))
    try:
        downlink, _ = recording_downlink(cache, backend.store, signer.public_key_bytes())
        result = downlink.pull()
        assert (result.status, result.rules_version, result.rules_error) == ("applied", 5, None)
        assert downlink.rules.rule_for("config", "label") == "max"
    finally:
        cache.close()


def test_under_the_packaged_rules_release_documents_leave_them_out(tmp_path: Path) -> None:
    backend = backend_resource(tmp_path, StateRulesResource()).get()
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0)
    signed = json.loads(backend.store.get(desired_key("t1", "d1")))
    assert signed["document"]["release"]["version"] == "2.0.0"
    assert "state_rules" not in signed["document"]


def test_a_rules_file_is_read_only_when_the_backend_writes_a_document(tmp_path: Path) -> None:
    missing = tmp_path / "operator" / "state_rules.yaml"
    backend = backend_resource(tmp_path, StateRulesResource(path=str(missing))).get()
    assert backend.status("r1").devices == ()  # a rollout sensor's idle tick: no rules needed
    write_rules(missing.parent, version=6, label_rule="min")
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0)
    assert backend.publisher.current("t1", "d1").state_rules.version == 6
