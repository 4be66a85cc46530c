"""The ``device_drift`` asset's configuration drift in Dagster: metadata per status, the age check
(WARN past its threshold, never for accepted drift), and the optional summary written back to git."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from assets.rollouts.drift import ConfigDriftCheckConfig, config_drift_age, device_drift
from resources.gitops import GitOpsRepoResource
from resources.lakehouse import LakehouseResource
from tests.support.config_drift import DriftWorld
from tests.support.fleet import Clock, Fleet
from tests.support.git_repo import git, origin_and_clone

HOUR = 3_600_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[DriftWorld]:
    """A device whose central edits were made two hours ago and never applied (color pending), with
    a prefer_device field it keeps (calibration accepted)."""
    fleet = Fleet(tmp_path / "fleet", Clock(time.time_ns() // 1_000_000 - 2 * HOUR))
    w = DriftWorld(fleet)
    w.agent("t1", "d1").cache.put("config", "main", {"color": "red", "calibration": 1.5})
    w.sync("t1", "d1")
    fleet.clock.ms += 60_000
    w.edit("t1", "d1", color='"blue"', calibration="2.0")
    yield w
    w.close()


def lakehouse_of(world: DriftWorld) -> LakehouseResource:
    cfg = world.fleet.lake.config
    return LakehouseResource(catalog=cfg.catalog, data_path=cfg.data_path)


def test_asset_reports_config_drift_and_the_check_warns_past_its_threshold(world: DriftWorld) -> None:
    lakehouse = lakehouse_of(world)
    result = dg.materialize(
        [device_drift, config_drift_age],
        resources={"lakehouse": lakehouse, "gitops_repo": GitOpsRepoResource()},
    )
    assert result.success
    meta = result.asset_materializations_for_node("device_drift")[0].metadata
    assert meta["config_pending"].value == 1 and meta["config_accepted"].value == 1
    assert meta["config_drifted"].value == 0
    assert "| t1 | d1 | config/main/color | pending |" in meta["config_drift_sample"].value
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # pending for 2 h > 1 h
    oldest = check.metadata["oldest"].value
    assert [(r["field"], r["status"]) for r in oldest] == [("color", "pending")]  # accepted never warns
    assert oldest[0]["age_s"] > 7000

    wider = config_drift_age(config=ConfigDriftCheckConfig(threshold_s=3 * 3600), lakehouse=lakehouse)
    assert wider.passed and wider.metadata["old_fields"].value == 0


def test_drift_summary_is_committed_to_the_gitops_repository_when_enabled(
    world: DriftWorld, tmp_path: Path
) -> None:
    origin, dev = origin_and_clone(tmp_path)
    gitops = GitOpsRepoResource(
        repo=str(origin), workdir=str(tmp_path / "clone"), drift_file="status/drift.json"
    )
    resources = {"lakehouse": lakehouse_of(world), "gitops_repo": gitops}
    first = dg.materialize([device_drift], resources=resources)
    commit = first.asset_materializations_for_node("device_drift")[0].metadata["drift_writeback_commit"].value
    git(dev, "pull", "--quiet", "origin", "main")
    assert git(dev, "rev-parse", "HEAD") == commit
    assert git(dev, "log", "-1", "--format=%s") == "device drift [edgeplat]"
    summary = json.loads((dev / "status" / "drift.json").read_text())
    assert summary["counts"] == {"pending": 1, "drifted": 0, "accepted": 1}
    assert {(f["field"], f["status"], f["desired_value"]) for f in summary["fields"]} == {
        ("color", "pending", '"blue"'),
        ("calibration", "accepted", "2.0"),
    }

    # unchanged drift: no new commit; converged device: the summary says so
    again = dg.materialize([device_drift], resources=resources)
    assert again.asset_materializations_for_node("device_drift")[0].metadata[
        "drift_writeback_commit"
    ].value == ("unchanged")
    world.sync("t1", "d1")
    dg.materialize([device_drift], resources=resources)
    git(dev, "pull", "--quiet", "origin", "main")
    summary = json.loads((dev / "status" / "drift.json").read_text())
    assert summary["counts"] == {"pending": 0, "drifted": 0, "accepted": 1}


def test_the_default_is_no_write_back_and_a_spec_path_is_refused(world: DriftWorld, tmp_path: Path) -> None:
    origin, _ = origin_and_clone(tmp_path)
    off = GitOpsRepoResource(repo=str(origin), workdir=str(tmp_path / "clone"))
    result = dg.materialize([device_drift], resources={"lakehouse": lakehouse_of(world), "gitops_repo": off})
    assert "drift_writeback_commit" not in result.asset_materializations_for_node("device_drift")[0].metadata
    assert git(origin, "rev-list", "--count", "main") == "1"
    watcher = GitOpsRepoResource(repo=str(origin), workdir=str(tmp_path / "c2")).watcher()
    with pytest.raises(Exception, match="must be a .json path"):
        watcher.commit_file("rollouts/drift.yaml", "{}\n", "nope")


def test_a_write_back_that_loses_a_push_race_is_redone_on_the_new_head(tmp_path: Path) -> None:
    origin, dev = origin_and_clone(tmp_path)
    writer = GitOpsRepoResource(
        repo=str(origin), workdir=str(tmp_path / "clone"), drift_file="status/drift.json"
    ).drift_writer()
    assert writer.workdir == tmp_path / "clone-drift"  # never the sensor's clone
    assert writer.commit_file("status/drift.json", '{"n": 1}\n', "drift 1")
    # another writer (a person, the status write-back) pushes between our fetch and our push, once
    hook = writer.workdir / ".git" / "hooks" / "pre-push"
    hook.write_text(
        "#!/bin/sh\n"
        f'[ -e "{tmp_path}/raced" ] && exit 0\n'
        f'touch "{tmp_path}/raced"\n'
        f'cd "{dev}" && git pull -q origin main && echo x > other.txt && git add other.txt '
        '&& git commit -qm "meanwhile" && git push -q origin HEAD:main\n'
    )
    hook.chmod(0o755)
    head = writer.commit_file("status/drift.json", '{"n": 2}\n', "drift 2")
    assert (tmp_path / "raced").exists()
    git(dev, "pull", "--quiet", "origin", "main")
    assert git(dev, "rev-parse", "HEAD") == head
    assert (dev / "status" / "drift.json").read_text() == '{"n": 2}\n' and (dev / "other.txt").exists()
