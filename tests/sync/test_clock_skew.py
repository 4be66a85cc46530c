"""Invariant 4: a device whose clock runs 24 h ahead cannot win every later conflict.

What happens (documented in edgeplat.sync.ingest): its batches are deferred at ingest
(quarantine reason ``hlc_too_far_ahead``), so its edits neither enter ``device_state`` nor
pull the central clock forward; honest edits made meanwhile win. Once central time is
within the drift bound of the batches' HLCs, reconciliation admits them (nothing is lost)
and from then on they compete as ordinary, current edits: any later edit beats them.
"""

from __future__ import annotations

from edge_sync.rules import default_rules
from edgeplat.sync.central_edits import CentralEdit, apply_central_edits
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.reconcile import reconcile
from tests.support.fleet import T0_MS, Fleet, rows

HOUR = 3_600_000
DAY = 24 * HOUR


def color(fleet: Fleet) -> str:
    return fleet.count("SELECT value FROM device_state WHERE device_id = 'fast' AND field = 'color'")[0][0]


def test_clock_24h_ahead_is_deferred_cannot_win_and_is_admitted_later(fleet: Fleet) -> None:
    t = "t1"
    edit = rows("state", t, "fast", [1], base_ms=T0_MS + DAY, values={"field": ["color"], "value": ['"red"']})
    from edge_sync.batch import write_batch

    skewed = write_batch(
        edit,
        tenant_id=t,
        device_id="fast",
        stream="state",
        key_service=fleet.keys,
        identity=fleet.device(t, "fast"),
    )
    tele = fleet.batch(t, "fast", "telemetry", range(1, 11), base_ms=T0_MS + DAY)
    keys = [fleet.upload(skewed), fleet.upload(tele)]
    report = ingest_objects(fleet.env(), keys)
    assert report.quarantined == {"hlc_too_far_ahead": 2} and report.accepted == 0
    assert fleet.count("SELECT count(*) FROM device_state")[0][0] == 0

    # an honest central edit an hour later wins: the device's future HLC is not in play
    fleet.clock.ms = T0_MS + HOUR
    edits = [CentralEdit(t, "fast", "config", "main", "color", '"blue"')]
    applied = apply_central_edits(fleet.lake, edits, default_rules(), wall=fleet.clock)
    assert applied.hlcs[0] >> 16 < T0_MS + DAY  # the central clock was not dragged a day ahead
    assert color(fleet) == '"blue"'

    # still too far ahead: reconciliation keeps it pending, no duplicate quarantine row
    fleet.clock.ms = T0_MS + 2 * HOUR
    rep = reconcile(fleet.env(), compaction=False)
    assert rep.pending_deferred == 2 and rep.deferred.deferred_admitted == 0
    assert fleet.count("SELECT count(*) FROM quarantine")[0][0] == 2

    # central time caught up: admitted, nothing lost; the gap check does not flag deferred ranges meanwhile
    fleet.clock.ms = T0_MS + DAY
    rep = reconcile(fleet.env(), compaction=False)
    assert rep.deferred.deferred_admitted == 2 and rep.pending_deferred == 0
    assert fleet.count("SELECT count(*) FROM telemetry WHERE device_id = 'fast'")[0][0] == 10
    assert fleet.count("SELECT count(*) FROM quarantine WHERE resolved_at IS NOT NULL")[0][0] == 2
    assert color(fleet) == '"red"'  # now an ordinary current edit

    # and a later honest edit beats it
    fleet.clock.ms = T0_MS + DAY + 60_000
    apply_central_edits(
        fleet.lake,
        [CentralEdit(t, "fast", "config", "main", "color", '"green"')],
        default_rules(),
        wall=fleet.clock,
    )
    assert color(fleet) == '"green"'
    conflicts = fleet.count("SELECT loser_value, winner_value FROM state_conflicts WHERE field = 'color'")
    assert conflicts == [('"red"', '"green"')]
