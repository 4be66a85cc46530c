"""``rollout_health``: per phase, the canary cohort against the baseline, with the gates as asset checks.

Each phase's window runs from its deploy to the next step (or now). The checks report the
gates of the latest deployed phase exactly as the promotion sensor evaluates them (same
cohorts, same statistics), so the UI shows why a rollout promoted, waits or rolled back.
Check ``gates`` carries the overall verdict; one check per health metric carries that
metric's limits (passing with "no gate" when the spec does not gate it).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.rollouts.charts import chart_markdown, progress_metadata
from assets.rollouts.common import GROUP, ROLLOUTS, md_table, store_from
from edgeplat.rollouts import cohorts
from edgeplat.rollouts.events import RolloutState
from edgeplat.rollouts.gates import GateReport, Verdict, evaluate_phase, overall_verdict
from edgeplat.rollouts.progress import error_rates, release_progress
from edgeplat.rollouts.spec import HEALTH_METRICS
from resources.lakehouse import LakehouseResource

CHECKS = ["gates", *HEALTH_METRICS]
CHART_BUCKET_MINUTES = 10


def _check_result(name: str, report: GateReport | None, state: RolloutState) -> dg.AssetCheckResult:
    if report is None:
        return dg.AssetCheckResult(
            check_name=name, passed=True, metadata={"verdict": "not evaluated", "status": str(state.status)}
        )
    if name == "gates":
        checks = list(report.checks)
        verdict = report.verdict
    else:
        checks = [c for c in report.checks if c.metric == name]
        if not checks:
            return dg.AssetCheckResult(
                check_name=name, passed=True, metadata={"verdict": "no gate on this metric"}
            )
        verdict = overall_verdict(c.verdict for c in checks)
    severity = dg.AssetCheckSeverity.ERROR if verdict == Verdict.FAIL else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=name,
        passed=verdict in (Verdict.PASS, Verdict.SKIPPED),
        severity=severity,
        metadata={
            "verdict": str(verdict),
            "phase": state.phase,
            "checks": dg.MetadataValue.md(
                md_table(
                    ["metric", "limit", "threshold", "verdict", "reason"],
                    [(c.metric, c.limit, c.threshold, str(c.verdict), c.reason) for c in checks],
                )
            ),
        },
    )


@dg.asset(
    partitions_def=ROLLOUTS,
    group_name=GROUP,
    check_specs=[
        dg.AssetCheckSpec(name, asset="rollout_health", description=f"rollout gate: {name}")
        for name in CHECKS
    ],
    description="Per phase, canary (updated devices) against baseline (comparable devices not yet updated, "
    "same tenant/platform strata, same window); the gates of the latest phase are its asset checks.",
)
def rollout_health(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    rid = context.partition_key
    store = store_from(lakehouse)
    now = datetime.now(UTC)
    rows, report = [], None
    with store.session() as con:
        state = RolloutState.from_events(store.events(rid, con))
        spec = state.spec
        for phase, start, end in state.phase_windows(now):
            samples = cohorts.cohort_samples(con, rid, spec, start, end, max_phase=phase)
            rep = evaluate_phase(spec, phase, samples, start)
            listed = samples.to_pylist()
            canary = [r for r in listed if r["cohort"] == "canary"]
            base = [r for r in listed if r["cohort"] == "baseline"]

            def rate(rs: list[dict]) -> float | None:
                req = sum(r["requests"] for r in rs)
                return round(sum(r["errors"] for r in rs) / req, 5) if req else None

            rows.append(
                (
                    phase,
                    f"{spec.phases[phase].percent:g}%",
                    start.isoformat(timespec="minutes"),
                    len(canary),
                    len(base),
                    rate(canary),
                    rate(base),
                    sum(r["crash_count"] for r in canary),
                    str(rep.verdict) if rep else "no gates",
                )
            )
            if phase == state.phase:
                report = rep
        rates = error_rates(con, rid, state, bucket_minutes=CHART_BUCKET_MINUTES)
        # the series end at the rollout's latest event or report, not at now: on the demo's
        # simulated clock (or a fleet gone quiet) the story would shrink to the chart's left edge
        latest = [state.events[-1].at, *(r.at + timedelta(minutes=CHART_BUCKET_MINUTES) for r in rates[-1:])]
        progress = release_progress(con, rid, state, min(now, max(latest)))
    chart = None
    try:
        from edgeplat.rollouts.plots import render_png

        chart = render_png(state, progress, rates)
    except Exception as exc:  # a chart must never fail the asset
        context.log.warning("could not plot rollout %s: %s", rid, exc)
    metadata = {
        "status": str(state.status),
        "phase": state.phase,
        "per_phase": dg.MetadataValue.md(
            md_table(
                [
                    "phase",
                    "percent",
                    "since",
                    "canary devices",
                    "baseline devices",
                    "canary error rate",
                    "baseline error rate",
                    "canary crashes",
                    "verdict",
                ],
                rows,
            )
        ),
    }
    metadata.update(progress_metadata(state, progress, rows))
    if chart is not None:
        metadata["chart"] = chart_markdown(rid, chart)
    return dg.MaterializeResult(
        metadata=metadata, check_results=[_check_result(name, report, state) for name in CHECKS]
    )
