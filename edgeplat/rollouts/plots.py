"""PNG charts of a rollout: devices on the release over time, and canary vs baseline error rate.

Rendered with matplotlib's Agg backend (no display) into bytes: the ``rollout_health`` asset
embeds them in its metadata as a ``data:`` image (the Dagster UI renders it; a path on the
server would not be served), and ``edgeplat demo rollouts`` writes them to files. The series
come from ``progress`` (cumulative device facts), so this module only draws.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from edgeplat.lakehouse import Lakehouse  # noqa: E402
from edgeplat.rollouts.events import Kind, RolloutState  # noqa: E402
from edgeplat.rollouts.progress import ErrorRates, ProgressPoint, error_rates, release_progress  # noqa: E402
from edgeplat.rollouts.store import RolloutStore  # noqa: E402

_MARKED = {
    Kind.DEPLOY_PHASE: "tab:blue",
    Kind.ROLLBACK: "tab:red",
    Kind.APPROVE: "tab:green",
    Kind.COMPLETE: "tab:green",
    Kind.PAUSE: "tab:orange",
    Kind.FAIL: "tab:red",
}


def render_png(
    state: RolloutState, progress: Sequence[ProgressPoint], rates: Sequence[ErrorRates], *, dpi: int = 72
) -> bytes:
    """The two-panel chart (progress above, cohort error rates below) as PNG bytes."""
    spec = state.spec
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    try:
        ts = [p.at for p in progress]
        top.step(
            ts, [p.on_release for p in progress], where="post", color="tab:blue", lw=2, label="on the release"
        )
        # dashed on top: where every device sent has reported the release, the two lines coincide
        top.step(
            ts, [p.sent for p in progress], where="post", color="tab:gray", ls="--", label="sent the release"
        )
        top.set_ylabel("devices")
        top.set_ylim(bottom=0)
        top.legend(loc="upper left")
        top.set_title(
            f"rollout {state.rollout_id or state.rollout}: {spec.release.name} {spec.release.version} ({state.status})"
        )
        rt = [r.at for r in rates]
        bottom.plot(rt, [r.canary for r in rates], label="canary (on the release)", color="tab:red")
        bottom.plot(rt, [r.baseline for r in rates], label="baseline (not yet updated)", color="tab:gray")
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
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=dpi)
        return out.getvalue()
    finally:
        plt.close(fig)


def plot_rollout(lake: Lakehouse, rollout_id: str, out_dir: Path, *, bucket_minutes: int = 10) -> list[Path]:
    """Write ``rollout-<id>.png`` (progress above, cohort error rates below); returns its path."""
    store = RolloutStore(lake)
    with store.session() as con:
        state = store.state(rollout_id, con)
        rates = error_rates(con, rollout_id, state, bucket_minutes=bucket_minutes)
        # the demo's clock is simulated: end the chart at its last event or report, not at now
        until = max([state.events[-1].at, *[r.at for r in rates[-1:]]])
        progress = release_progress(con, rollout_id, state, until)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"rollout-{rollout_id}.png"
    path.write_bytes(render_png(state, progress, rates, dpi=90))
    return [path]
