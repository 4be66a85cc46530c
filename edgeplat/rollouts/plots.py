"""PNG charts of a rollout: devices on the release over time, and canary vs baseline error rate.

Rendered with matplotlib's Agg backend (no display) into the state directory's ``plots/``;
the Dagster assets attach the path and a markdown image to their metadata.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from edgeplat.lakehouse import Lakehouse  # noqa: E402
from edgeplat.rollouts.events import Kind, RolloutState  # noqa: E402
from edgeplat.rollouts.store import RolloutStore  # noqa: E402

_MARKED = {
    Kind.DEPLOY_PHASE: "tab:blue",
    Kind.ROLLBACK: "tab:red",
    Kind.APPROVE: "tab:green",
    Kind.COMPLETE: "tab:green",
    Kind.PAUSE: "tab:orange",
    Kind.FAIL: "tab:red",
}


def plot_rollout(lake: Lakehouse, rollout_id: str, out_dir: Path, *, bucket_minutes: int = 10) -> list[Path]:
    """Write ``rollout-<id>.png`` (progress above, cohort error rates below); returns its path."""
    store = RolloutStore(lake)
    with store.session() as con:
        state = RolloutState.from_events(store.events(rollout_id))
        spec = state.spec
        rows = con.execute(
            f"""
            WITH sent AS (SELECT tenant_id, device_id, min("at") AS sent_at FROM rollout_devices
                          WHERE rollout_id = ? AND action = 'deploy' GROUP BY ALL)
            SELECT time_bucket(INTERVAL '{int(bucket_minutes)} minutes', h.ts) AS t,
                   count(DISTINCT h.tenant_id || '/' || h.device_id) FILTER (WHERE h.version = ?) AS on_release,
                   sum(h.errors) FILTER (WHERE h.version = ?) / nullif(sum(h.requests) FILTER (WHERE h.version = ?), 0)
                       AS canary_err,
                   sum(h.errors) FILTER (WHERE h.version <> ? AND coalesce(h.ts < s.sent_at, true))
                       / nullif(sum(h.requests) FILTER (WHERE h.version <> ? AND coalesce(h.ts < s.sent_at, true)), 0)
                       AS base_err
            FROM health h LEFT JOIN sent s USING (tenant_id, device_id)
            WHERE h.tenant_id IN (SELECT unnest(?::VARCHAR[])) AND h.ts >= ?
            GROUP BY 1 ORDER BY 1""",
            [rollout_id, *[spec.release.version] * 5, list(spec.target.tenants), state.created_at],
        ).fetchall()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"rollout-{rollout_id}.png"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ts = [r[0] for r in rows]
    top.step(ts, [r[1] for r in rows], where="post", color="tab:blue")
    top.set_ylabel(f"devices on {spec.release.version}")
    top.set_title(f"rollout {rollout_id}: {spec.release.name} {spec.release.version} ({state.status})")
    bottom.plot(ts, [r[2] for r in rows], label="canary (on the release)", color="tab:red")
    bottom.plot(ts, [r[3] for r in rows], label="baseline (not yet updated)", color="tab:gray")
    bottom.set_ylabel("error rate")
    bottom.legend(loc="upper left")
    for e in state.events:
        color = _MARKED.get(Kind(e.kind)) if e.kind in Kind.__members__.values() else None
        if color:
            for ax in (top, bottom):
                ax.axvline(e.at, color=color, alpha=0.4, linestyle="--")
            top.annotate(
                f"{e.kind} {'' if e.phase is None else e.phase}",
                (e.at, 0),
                rotation=90,
                fontsize=7,
                color=color,
                xytext=(2, 2),
                textcoords="offset points",
            )
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]
