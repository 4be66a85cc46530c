"""Rollout progress as metadata the Dagster UI renders itself, for ``rollout_health``.

Three forms, each of which the webserver shows without reaching the server's disk: numbers
(``devices_on_release``, ``devices_sent``, the current phase's error rates), which the asset's
Plots tab draws across materializations; a markdown table of the devices on the release at
each step; and the chart as a PNG inside the markdown as a ``data:`` URI (Dagster's markdown
sanitizer allows ``data:`` image sources; ``tests/ui`` checks the image renders in Chromium).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import dagster as dg

from assets.rollouts.common import md_table
from edgeplat.rollouts.events import Kind, RolloutState
from edgeplat.rollouts.progress import ProgressPoint

# The steps a reader follows a rollout by; gate records and waits would drown them.
_STEPS = {
    Kind.DEPLOY_PHASE,
    Kind.PAUSE,
    Kind.RESUME,
    Kind.APPROVE,
    Kind.ROLLBACK,
    Kind.ROLLBACK_DONE,
    Kind.COMPLETE,
    Kind.FAIL,
    Kind.ABORT,
}
# the per-phase rows of rollout_health: (phase, percent, since, canary, baseline, canary rate, base rate, ...)
_CANARY_RATE, _BASELINE_RATE = 5, 6


def _at(progress: Sequence[ProgressPoint], t) -> ProgressPoint:
    return [p for p in progress if p.at <= t][-1] if progress[0].at <= t else progress[0]


def progress_metadata(
    state: RolloutState, progress: Sequence[ProgressPoint], phase_rows: Sequence[tuple]
) -> dict[str, dg.MetadataValue]:
    """Numeric entries (plotted across materializations) and the ``progress`` table."""
    last = progress[-1]
    steps = [
        (
            e.at.isoformat(timespec="minutes"),
            str(e.kind),
            "" if e.phase is None else e.phase,
            p.sent,
            p.on_release,
        )
        for e in state.events
        if e.kind in _STEPS
        for p in [_at(progress, e.at)]
    ]
    steps.append(
        (
            last.at.isoformat(timespec="minutes"),
            f"latest ({state.status})",
            last.phase,
            last.sent,
            last.on_release,
        )
    )
    out: dict[str, dg.MetadataValue] = {
        "devices_on_release": dg.MetadataValue.int(last.on_release),
        "devices_sent": dg.MetadataValue.int(last.sent),
        "progress": dg.MetadataValue.md(
            md_table(["at", "step", "phase", "devices sent", "devices on the release"], steps[-50:])
        ),
    }
    current = [r for r in phase_rows if r[0] == state.phase]
    if current:
        for key, col in (("canary_error_rate", _CANARY_RATE), ("baseline_error_rate", _BASELINE_RATE)):
            if current[-1][col] is not None:
                out[key] = dg.MetadataValue.float(float(current[-1][col]))
    return out


def chart_markdown(rollout_id: str, png: bytes) -> dg.MarkdownMetadataValue:
    """The chart as a markdown image whose source is the PNG itself (nothing to serve)."""
    return dg.MetadataValue.md(
        f"![rollout {rollout_id}](data:image/png;base64,{base64.b64encode(png).decode()})"
    )
