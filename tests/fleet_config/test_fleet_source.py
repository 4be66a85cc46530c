"""Reading fleet/ from a real git repository: a commit's tree, what changed, and the rollout
watcher never mistaking a layer file for a rollout spec."""

from __future__ import annotations

from pathlib import Path

from edgeplat.fleet_config.source import commit_info, fleet_changed, is_ancestor, tree_at
from edgeplat.rollouts.gitops import GitOpsWatcher
from tests.support.git_repo import GitOpsRepo


def test_a_commits_fleet_tree_its_changes_and_the_rollout_specs_stay_apart(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "git")
    repo.write("fleet/t1/tenant.yaml", "values: {}\n")
    repo.write("spec.yaml", "name: web\n")
    c1 = repo.commit("fleet and a spec")
    repo.write("fleet/t1/tenant.yaml", "values: {config: {pump: {mode: eco}}}\n")
    repo.author("Lee", "lee@example.com")
    c2 = repo.commit("eco pumps")
    c3 = repo.commit("nothing under fleet/")

    # a whole-repository spec dir: every YAML file is a spec, except the fleet/ tree
    watcher = GitOpsWatcher(str(repo.origin), tmp_path / "clone", spec_dir="")
    assert watcher.fetch() == c3
    assert watcher.changes(None, c3) == [("A", "spec.yaml")]
    assert tree_at(watcher, c1) == {"fleet/t1/tenant.yaml": "values: {}\n"}
    assert fleet_changed(watcher, c1, c2) and not fleet_changed(watcher, c2, c3)
    assert fleet_changed(watcher, "0" * 40, c3)  # a commit gone after a force push: look again
    info = commit_info(watcher, c2)
    assert (info.sha, info.author, info.origin) == (c2, "Lee <lee@example.com>", f"gitops:{c2}")
    assert is_ancestor(watcher, c1, c3) and not is_ancestor(watcher, c3, c1)
