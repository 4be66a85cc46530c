"""The one place that chooses how a job's steps execute, per environment (``EDGEPLAT_ENV``).

``local``: Dagster's default (steps in subprocesses of the run). ``production``: jobs that fan
out (the main sync, reconciliation) run each step as its own Kubernetes Job
(``k8s_job_executor``), so their steps spread over the cluster's nodes rather than one run
pod; the other jobs are one step or two and keep the default. The run pods themselves come
from ``K8sRunLauncher`` (deploy/dagster/dagster.production.yaml).
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_k8s import k8s_job_executor

from edgeplat.settings import environment

# Steps of one fan-out run in flight at once (each is a pod); the run queue bounds the runs.
MAX_CONCURRENT_STEPS = int(os.environ.get("EDGEPLAT_K8S_MAX_CONCURRENT_STEPS", "8"))
STEP_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}


def fan_out_executor(env: str | None = None) -> dg.ExecutorDefinition | None:
    """The executor for jobs that fan out: ``k8s_job_executor`` in production, else None (the default)."""
    if (env or environment()) != "production":
        return None
    return k8s_job_executor.configured(
        {
            "max_concurrent": MAX_CONCURRENT_STEPS,
            "step_k8s_config": {"container_config": {"resources": STEP_RESOURCES}},
        },
        name="edgeplat_k8s_job_executor",
    )
