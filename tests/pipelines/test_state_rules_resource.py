"""Where the central merge's rules come from: an operator's file, the GitOps repository, or the package;
and ``edgeplat rules check`` on a good and a bad file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli import main
from edge_sync.rules import default_rules
from pipelines.resources import resources_for
from resources.state_rules import StateRulesResource
from tests.support.operator_rules import FIRST_WINS, SMALLEST, unique, write_resolver_module, write_rules


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_the_environment_picks_the_operators_rules_file_else_the_packaged_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEPLAT_HOME", str(tmp_path / "home"))
    assert resources_for("local")["state_rules"].get().content_hash == default_rules().content_hash
    path = write_rules(tmp_path / "ops", version=7, label_rule="max")
    monkeypatch.setenv("EDGEPLAT_STATE_RULES", str(path))
    rules = resources_for("local")["state_rules"].get()
    assert rules.version == 7 and rules.rule_for("config", "label") == "max"


def test_rules_and_their_resolver_file_are_read_from_the_gitops_repository_head(tmp_path, caplog) -> None:
    origin, dev = tmp_path / "origin.git", tmp_path / "dev"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(tmp_path, "clone", "--quiet", str(origin), str(dev))
    git(dev, "checkout", "--quiet", "-B", "main")
    git(dev, "config", "user.email", "ops@example.com")
    git(dev, "config", "user.name", "Ops")
    name = unique("smallest")
    write_resolver_module(dev / "platform" / "resolvers", "smallest", SMALLEST.format(name=name))
    resolvers = [{"path": "resolvers/smallest.py"}]
    write_rules(dev / "platform", version=2, label_rule=f"custom:{name}", resolvers=resolvers)
    git(dev, "add", "-A")
    git(dev, "commit", "--quiet", "-m", "operator rules")
    git(dev, "push", "--quiet", "origin", "HEAD:main")
    resource = StateRulesResource(
        gitops_path="platform/state_rules.yaml",
        gitops_repo=str(origin),
        gitops_workdir=str(tmp_path / "work"),
    )
    rules = resource.get()
    assert rules.version == 2 and rules.resolver(name)("b", "a") == "a"
    write_rules(dev / "platform", version=3, label_rule="max", resolvers=resolvers)
    git(dev, "commit", "--quiet", "-am", "label takes the greatest")
    git(dev, "push", "--quiet", "origin", "HEAD:main")
    assert resource.get().rule_for("config", "label") == "max"
    (origin / "HEAD").rename(origin / "HEAD.moved")  # the repository is unreachable now
    assert resource.get().version == 3  # the last fetched head's rules, not a failed ingest
    assert "GitOps fetch failed, using the state rules of the last fetched commit" in caplog.text


def test_rules_check_shows_rules_and_resolvers_and_refuses_a_broken_resolver(tmp_path, capsys) -> None:
    good, bad = unique("smallest"), unique("first")
    write_resolver_module(tmp_path / "ops", "mine", SMALLEST.format(name=good), FIRST_WINS.format(name=bad))
    write_resolver_module(tmp_path / "ok", "mine", SMALLEST.format(name=good))
    path = write_rules(
        tmp_path / "ok", version=2, label_rule=f"custom:{good}", resolvers=[{"path": "mine.py"}]
    )
    assert main(["rules", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "version 2" in out and good in out and "path 'mine.py'" in out
    assert "commutative" in out and "label" in out
    path = write_rules(
        tmp_path / "ops", version=2, label_rule=f"custom:{good}", resolvers=[{"path": "mine.py"}]
    )
    assert main(["rules", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"resolver {bad!r} is not commutative" in err and "resolvers[0] (path 'mine.py')" in err
