"""The GitOps repository the rollout specs live in, as a Dagster resource."""

from pathlib import Path

import dagster as dg

from edgeplat.rollouts.gitops import GitOpsWatcher


class GitOpsRepoResource(dg.ConfigurableResource):
    """A git repository (path or URL) whose ``spec_dir`` on ``branch`` holds rollout specs, and
    optionally a ``fleet/`` tree of desired device state (``fleet_watcher``, docs/gitops.md).

    An empty ``repo`` switches GitOps off (the sensor skips). ``status_file`` (a path in the
    repo) turns on the status write-back commit; ``drift_file`` (a ``.json`` path in the repo, off by
    default) turns on the drift summary write-back of ``device_drift``. Credentials belong in the URL's credential
    helper or SSH agent of the code location, never in this config.
    """

    repo: str = ""
    branch: str = "main"
    spec_dir: str = "rollouts"
    status_file: str | None = None
    drift_file: str | None = None
    workdir: str = ""

    def watcher(self) -> GitOpsWatcher | None:
        if not self.repo:
            return None
        if not self.workdir:
            raise ValueError("GitOpsRepoResource needs a workdir for its clone (e.g. $EDGEPLAT_HOME/gitops)")
        return GitOpsWatcher(
            self.repo, self.workdir, branch=self.branch, spec_dir=self.spec_dir, status_file=self.status_file
        )

    def fleet_watcher(self, role: str) -> GitOpsWatcher | None:
        """A clone of the same repository for the ``fleet/`` tree, one per ``role`` (sensor, run):
        the fleet sensor and its runs fetch while the rollout sensor may write its status back,
        and two git processes must not share a clone's index and refs."""
        watcher = self.watcher()
        if watcher is None:
            return None
        workdir = f"{self.workdir.rstrip('/')}-fleet-{role}"
        return GitOpsWatcher(self.repo, workdir, branch=self.branch, spec_dir=self.spec_dir)

    def drift_writer(self) -> GitOpsWatcher | None:
        """A watcher on a clone of its own (``<workdir>-drift``) for the drift write-back, or None when
        it is off: runs write it while the sensor's clone may be busy, and two git processes must never
        share one work tree."""
        watcher = self.watcher() if self.drift_file else None
        if watcher is None:
            return None
        watcher.workdir = Path(f"{Path(self.workdir)}-drift")
        return watcher
