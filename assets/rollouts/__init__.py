"""Rollouts as Dagster assets (one dynamic partition per rollout), their gates as asset checks,
the operator jobs (launch, approve, pause, resume, abort, fail a phase) and device drift."""
