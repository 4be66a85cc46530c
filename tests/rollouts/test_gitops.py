"""GitOps against real git repositories in tmp_path: launch, supersede, abort, commits in the events."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import Kind, Status
from edgeplat.rollouts.gitops import GitOpsWatcher
from edgeplat.rollouts.store import RolloutStore
from tests.support.rollouts import small_spec


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    """(bare origin, a developer's clone of it on branch main)."""
    origin, dev = tmp_path / "origin.git", tmp_path / "dev"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(tmp_path, "clone", "--quiet", str(origin), str(dev))
    git(dev, "checkout", "--quiet", "-B", "main")
    git(dev, "config", "user.email", "dana@example.com")
    git(dev, "config", "user.name", "Dana")
    (dev / "README.md").write_text("specs\n")
    commit(dev, "init")
    return origin, dev


def commit(dev: Path, message: str) -> str:
    git(dev, "add", "-A")
    git(dev, "commit", "--quiet", "-m", message)
    git(dev, "push", "--quiet", "origin", "HEAD:main")
    return git(dev, "rev-parse", "HEAD")


def write_spec(dev: Path, name: str, version: str) -> None:
    spec = small_spec(name=name).model_dump(mode="json", exclude_none=True)
    spec["release"]["version"] = version
    (dev / "rollouts").mkdir(exist_ok=True)
    (dev / "rollouts" / f"{name}.yaml").write_text(yaml.safe_dump(spec))


@pytest.mark.slow
def test_commits_launch_supersede_and_abort(tmp_path, repos, lake, backend) -> None:
    origin, dev = repos
    ctl = Controller(RolloutStore(lake), backend)
    watcher = GitOpsWatcher(str(origin), tmp_path / "clone")

    write_spec(dev, "web", "3.0.0")
    (dev / "rollouts" / "broken.yaml").write_text("name: broken\nrelease: {name: x}\n")
    c1 = commit(dev, "ship web 3.0.0")
    r1 = watcher.sync(ctl, None)
    assert r1.head == c1 and [x["path"] for x in r1.launched] == ["rollouts/web.yaml"]
    assert r1.invalid[0]["path"] == "rollouts/broken.yaml" and "release.version" in r1.invalid[0]["errors"]
    first = r1.launched[0]["rollout_id"]
    created = ctl.store.events(first)[0]
    assert created.inputs["source"]["commit"] == c1 and created.actor == "gitops:dana@example.com"
    assert watcher.sync(ctl, None).launched == r1.launched  # replaying a diff launches nothing new
    assert len(ctl.store.list_rollouts()) == 1

    write_spec(dev, "web", "3.0.1")
    c2 = commit(dev, "web 3.0.1: fix")
    r2 = watcher.sync(ctl, c1)
    assert r2.aborted == [{"rollout_id": first, "path": "rollouts/web.yaml", "commit": c2}]
    second = r2.launched[0]["rollout_id"]
    assert second != first and ctl.store.state(second).spec.release.version == "3.0.1"
    abort = next(e for e in ctl.store.events(first) if e.kind == Kind.ABORT)
    assert abort.inputs["gitops"]["commit"] == c2 and "spec changed" in abort.reason
    ctl.tick(first)
    assert ctl.store.state(first).status in (Status.ROLLING_BACK, Status.ABORTED)

    (dev / "rollouts" / "web.yaml").unlink()
    c3 = commit(dev, "stop web")
    r3 = watcher.sync(ctl, c2)
    assert r3.launched == [] and r3.aborted[0]["rollout_id"] == second
    assert watcher.sync(ctl, c2).aborted == []  # the abort is already recorded: nothing twice
    assert [e.kind for e in ctl.store.events(second)].count(Kind.ABORT) == 1
    assert watcher.sync(ctl, c3).head == c3


def test_sensor_launches_from_git_and_writes_status_back(tmp_path, repos, lake) -> None:
    from pipelines.sensors.rollout_gitops import rollout_gitops_sensor
    from resources.backends import FleetBackendResource
    from resources.gitops import GitOpsRepoResource
    from resources.keys import PlatformSignerResource
    from resources.lakehouse import LakehouseResource
    from resources.object_store import ObjectStoreResource

    origin, dev = repos
    write_spec(dev, "api", "1.2.0")
    commit(dev, "ship api")
    resources = {
        "lakehouse": LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
        "fleet_backend": FleetBackendResource(
            lakehouse=LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
            object_store=ObjectStoreResource(url=str(tmp_path / "objects")),
            platform_signer=PlatformSignerResource(path=str(tmp_path / "k.pem"), create_if_missing=True),
        ),
        "gitops_repo": GitOpsRepoResource(
            repo=str(origin), workdir=str(tmp_path / "clone"), status_file="status/rollouts.json"
        ),
    }
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            result = rollout_gitops_sensor(ctx)
        cursor = json.loads(result.cursor)
        assert result.dynamic_partitions_requests[0].partition_keys[0].startswith("api-")
        (step,) = result.run_requests  # the first deploy happens in a run, not in the sensor
        assert step.job_name == "advance_rollout" and step.tags["edgeplat/rollout"].startswith("api-")
        git(dev, "pull", "--quiet", "origin", "main")
        status = json.loads((dev / "status" / "rollouts.json").read_text())
        assert status["rollouts/api.yaml"]["status"] == "pending"
        assert cursor["commit"] == git(dev, "rev-parse", "HEAD")  # the status commit is not a spec change
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor) as ctx:
            again = rollout_gitops_sensor(ctx)
        assert again.skip_reason and not again.dynamic_partitions_requests


def write_raw(dev: Path, name: str, **over) -> None:
    spec = small_spec(name=name, **over).model_dump(mode="json", exclude_none=True)
    (dev / "rollouts").mkdir(exist_ok=True)
    (dev / "rollouts" / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def test_safe_changes_update_in_place_and_others_supersede(tmp_path, repos, lake, backend) -> None:
    origin, dev = repos
    ctl = Controller(RolloutStore(lake), backend)
    watcher = GitOpsWatcher(str(origin), tmp_path / "clone")
    phases = [{"percent": 10, "bake": "30m"}, {"percent": 50, "bake": "30m"}, {"percent": 100, "bake": "15m"}]
    write_raw(dev, "web", strategy={"type": "canary", "phases": phases})
    c1 = commit(dev, "ship web")
    rid = watcher.sync(ctl, None).launched[0]["rollout_id"]
    ctl.tick(rid)  # phase 0 deployed: it is reached, phases 1 and 2 are not
    assert ctl.store.state(rid).phase == 0

    later = [phases[0], {"percent": 50, "bake": "1h", "approval": "manual"}, phases[2]]
    write_raw(dev, "web", strategy={"type": "canary", "phases": later}, progress_deadline="3h")
    c2 = commit(dev, "web: slower phase 1, manual approval, longer deadline")
    r2 = watcher.sync(ctl, c1)
    assert r2.launched == [] and r2.aborted == []
    assert r2.updated == [
        {
            "rollout_id": rid,
            "path": "rollouts/web.yaml",
            "commit": c2,
            "changed": ["progress_deadline", "strategy.phases[1].approval", "strategy.phases[1].bake"],
        }
    ]
    update = [e for e in ctl.store.events(rid) if e.kind == Kind.SPEC_UPDATED]
    assert len(update) == 1 and update[0].inputs["gitops"]["commit"] == c2
    assert (
        update[0].inputs["changed"] == r2.updated[0]["changed"]
        and update[0].actor == "gitops:dana@example.com"
    )
    state = ctl.store.state(rid)
    assert (
        state.spec.phases[1].approval == "manual" and state.spec.progress_deadline.total_seconds() == 3 * 3600
    )
    assert ctl.store.list_rollouts()[0].status == str(state.status)
    assert watcher.sync(ctl, c1).updated == []  # replaying the commit: nothing twice
    assert [e.kind for e in ctl.store.events(rid)].count(Kind.SPEC_UPDATED) == 1

    # a change to the reached phase 0 cannot apply in place: abort with the field named, relaunch
    reached = [{"percent": 5, "bake": "30m"}, *later[1:]]
    write_raw(dev, "web", strategy={"type": "canary", "phases": reached}, progress_deadline="3h")
    c3 = commit(dev, "web: smaller canary")
    r3 = watcher.sync(ctl, c2)
    assert r3.updated == [] and r3.aborted[0]["rollout_id"] == rid and r3.launched[0]["commit"] == c3
    abort = next(e for e in ctl.store.events(rid) if e.kind == Kind.ABORT)
    assert "strategy.phases[0].percent" in abort.reason and "already reached" in abort.reason

    # an invalid edit leaves the running rollout alone
    (dev / "rollouts" / "web.yaml").write_text("name: web\nrelease: {name: x}\n")
    c4 = commit(dev, "oops")
    r4 = watcher.sync(ctl, c3)
    assert r4.invalid and r4.aborted == [] and r4.launched == [] and r4.updated == []
    assert watcher.sync(ctl, c4).head == c4
