"""The conflict rules of the central merge, as a Dagster resource (the operator's, or the packaged ones)."""

from pathlib import Path

import dagster as dg

from edge_sync.rules import RuleSet
from edgeplat.rollouts.gitops import GitOpsWatcher
from edgeplat.state_rules_source import gitops_rules, operator_rules


class StateRulesResource(dg.ConfigurableResource):
    """The state conflict rules every central merge and desired-state document uses.

    ``path``: an operator's rules file. ``gitops_path``: a rules file inside the GitOps
    repository (``gitops_repo``/``gitops_branch``, cloned to ``gitops_workdir``), read at the
    branch head. Neither: the rules edge_sync ships. Validated at load: a bad file fails the run
    with the file, the field and the fix.
    """

    path: str = ""
    gitops_path: str = ""
    gitops_repo: str = ""
    gitops_branch: str = "main"
    gitops_workdir: str = ""

    def get(self, clone: str = "clone") -> RuleSet:
        """The rules in force; ``clone``: the GitOps clone's directory under ``gitops_workdir`` (a
        sensor fetches in its own, as two git processes must not share one clone's refs)."""
        if self.path and self.gitops_path:
            raise ValueError("StateRulesResource: set path or gitops_path, not both")
        if not self.gitops_path:
            return operator_rules(self.path or None)
        if not self.gitops_repo or not self.gitops_workdir:
            raise ValueError(
                "StateRulesResource(gitops_path=...) needs gitops_repo and gitops_workdir "
                "(EDGEPLAT_GITOPS_REPO, EDGEPLAT_GITOPS_WORKDIR)"
            )
        workdir = Path(self.gitops_workdir)
        watcher = GitOpsWatcher(self.gitops_repo, workdir / clone, branch=self.gitops_branch)
        return gitops_rules(watcher, self.gitops_path, workdir / "rules")

    def source(self) -> str:
        """Where the rules come from, as an operator would fix it (named in the sensor's reasons)."""
        if self.gitops_path:
            return (
                f"{self.gitops_path} in the GitOps repository {self.gitops_repo} (branch {self.gitops_branch}, "
                "EDGEPLAT_STATE_RULES_GITOPS_PATH)"
            )
        if self.path:
            return f"{self.path} (EDGEPLAT_STATE_RULES)"
        return "the packaged file (edge_sync/state_rules.yaml)"
