"""The production device registry (the lakehouse's ``device_keys``) and the production resources
keeping nothing on a replica's own disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sync.identity import DeviceIdentity
from edgeplat.device_registry import LakehouseDeviceRegistry
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from pipelines.resources import production_resources


@pytest.fixture
def lake(tmp_path: Path) -> Lakehouse:
    (tmp_path / "data").mkdir()
    lake = Lakehouse(LakehouseConfig(f"sqlite:{tmp_path}/catalog.sqlite", f"{tmp_path}/data/"))
    lake.ensure_schema()
    return lake


def test_register_revoke_and_another_replica_sees_it(lake: Lakehouse) -> None:
    a, b = (DeviceIdentity.generate("t1", f"d{i}") for i in range(2))
    here, replica = LakehouseDeviceRegistry(lake), LakehouseDeviceRegistry(lake, cache_s=0)
    ids = here.register_many([("t1", "d0", a.public_key_bytes()), ("t1", "d1", b.public_key_bytes())])
    assert here.register("t1", "d0", a.public_key_bytes()) == ids[0]  # idempotent
    assert replica.public_keys("t1", "d0") == [(ids[0], a.public_key_bytes())]
    assert replica.public_keys("t2", "d0") == []  # another tenant's device of that name: nothing
    replica.public_keys("t1", "d1")
    here.revoke("t1", "d1", ids[1])
    assert here.public_keys("t1", "d1") == [] and replica.public_keys("t1", "d1") == []
    with pytest.raises(KeyError, match="no key"):
        here.revoke("t1", "d1", "nope")
    here.register("t1", "d1", b.public_key_bytes())  # re-enrolled: active again
    assert replica.public_keys("t1", "d1") == [(ids[1], b.public_key_bytes())]
    with lake.session(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM device_keys").fetchone()[0] == 3


def test_production_keeps_nothing_on_a_replicas_own_disk(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("EDGEPLAT_HOME", str(home))
    monkeypatch.setenv("EDGEPLAT_CATALOG", f"sqlite:{tmp_path}/catalog.sqlite")
    monkeypatch.setenv("EDGEPLAT_LAKE_DATA", f"{tmp_path}/data/")
    monkeypatch.setenv("EDGEPLAT_GITOPS_WORKDIR", str(tmp_path / "scratch" / "gitops"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unused-here")  # the lakehouse resource reads them at init
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused-here")
    (tmp_path / "data").mkdir()
    res = production_resources()
    with res["device_registry"].process_config_and_initialize_cm() as registry:
        assert isinstance(registry.get(), LakehouseDeviceRegistry)
    assert res["fleet_backend"].lakehouse is res["lakehouse"]  # the desired-state records' home
    assert res["gitops_repo"].workdir == str(tmp_path / "scratch" / "gitops")
    monkeypatch.delenv("EDGEPLAT_GITOPS_WORKDIR")
    assert not production_resources()["gitops_repo"].workdir.startswith(str(home))
