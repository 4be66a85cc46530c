"""The lakehouse tables: names, columns and partitioning. The table names are a contract.

Every table carries ``tenant_id``; rows about a device carry ``device_id``; rows that came
from a device stream carry ``stream``, ``seq``, ``hlc``, ``node_id`` and ``ts`` (device
wall time). Later features add columns by appending to a table's list here: the schema
step adds missing columns to existing tables (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``).

Partitioning by day: the stream tables carry ``day DATE``, the UTC date of ``ts``, filled by
the ingest (:func:`utc_day`), and are partitioned by ``(tenant_id, day)`` (identity keys).
A date computed in numpy is far cheaper than partition transforms such as
``year(ts), month(ts), day(ts)``, which DuckLake computes with ICU calendar functions on
every insert (docs/decisions.md, "Stream tables partitioned by a day column"). (A lone
``day(ts)`` is not a day key: DuckLake partitions it by day of the month.)
A table still partitioned by transforms of ``ts`` is switched when the schema step adds
``day`` to it. DuckLake keeps files written before under the keys they were written with,
so those files stay as they are, readable, and their rows have ``day`` NULL, as do rows of
writers that do not fill it (they land in the tenant's ``day=NULL`` partition).
Queries therefore select days by ``ts`` (every view does); ``day`` is a partition key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow is imported when utc_day runs: the schema itself needs none
    import pyarrow as pa

STREAM_ENVELOPE = [
    ("tenant_id", "VARCHAR"),
    ("device_id", "VARCHAR"),
    ("stream", "VARCHAR"),
    ("seq", "BIGINT"),
    ("hlc", "BIGINT"),
    ("node_id", "VARCHAR"),
    ("ts", "TIMESTAMPTZ"),
]
INGEST_COLUMNS = [("batch_key", "VARCHAR"), ("ingested_at", "TIMESTAMPTZ")]
DAY_COLUMN = ("day", "DATE")  # UTC date of ts; last, where ADD COLUMN puts it in an existing table
BY_TENANT_AND_DAY = ("tenant_id", "day")
_UNITS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def utc_day(ts: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """The UTC date of each timestamp (the ``day`` partition key), computed in numpy.

    A timestamp's stored value is UTC whatever its time zone, so integer division by the
    day's length is the UTC date (floor division: 1969-12-31 23:59 stays on the 31st).
    """
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_timestamp(ts.type):
        raise TypeError(f"utc_day needs a timestamp column, got {ts.type}; pass the table's ts column")
    per_day = _UNITS_PER_DAY[ts.type.unit]
    out = []
    for chunk in ts.chunks if isinstance(ts, pa.ChunkedArray) else [ts]:
        ints = chunk.view(pa.int64())
        days = (ints.fill_null(0).to_numpy() // per_day).astype(np.int32)
        mask = chunk.is_null().to_numpy(zero_copy_only=False) if chunk.null_count else None
        out.append(pa.array(days, pa.date32(), mask=mask))
    return pa.chunked_array(out, pa.date32())


@dataclass(frozen=True)
class Table:
    """One lakehouse table: ordered columns and its DuckLake partition keys."""

    name: str
    columns: list[tuple[str, str]]
    partitioned_by: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""

    def create_sql(self) -> str:
        cols = ", ".join(f'"{n}" {t}' for n, t in self.columns)
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" ({cols})'

    def partition_sql(self) -> str:
        """``ALTER TABLE ... SET PARTITIONED BY`` for this table's keys (only new data files follow it)."""
        return f'ALTER TABLE "{self.name}" SET PARTITIONED BY ({", ".join(self.partitioned_by)})'


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "devices",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("platform", "VARCHAR"),  # greengrass | iot_edge
                ("tags", "VARCHAR"),  # JSON object
                ("registered_at", "TIMESTAMPTZ"),
                ("last_batch_at", "TIMESTAMPTZ"),
                ("status", "VARCHAR"),  # online | offline | unknown
                ("reported_version", "VARCHAR"),
                ("reported_slot", "VARCHAR"),
                ("updated_at", "TIMESTAMPTZ"),
                ("reported_hlc", "BIGINT"),  # HLC of the health row reported_version came from
                # device inventory (edgeplat.inventory): the platforms' and the device's claims
                ("connectivity", "VARCHAR"),  # the source's word: connected, healthy, online, ...
                ("last_seen", "TIMESTAMPTZ"),
                ("sources", "VARCHAR"),  # JSON: field -> source (operator, greengrass, iot_hub, edge_agent)
                ("conflicts", "VARCHAR"),  # JSON list: {field, claims: {source: value}, kept}
                # what the platform reports the device runs (edgeplat.backends.feedback)
                ("platform_version", "VARCHAR"),
                ("platform_state", "VARCHAR"),  # RUNNING, BROKEN, ERRORED, running, backoff, ...
                ("platform_observed_at", "TIMESTAMPTZ"),
            ],
            description="Registered devices and what they last reported.",
        ),
        Table(
            "telemetry",
            STREAM_ENVELOPE + [("metric", "VARCHAR"), ("value", "DOUBLE")] + INGEST_COLUMNS + [DAY_COLUMN],
            BY_TENANT_AND_DAY,
            "Telemetry samples, one row per metric sample, exactly once per (tenant, device, seq).",
        ),
        Table(
            "alerts",
            STREAM_ENVELOPE
            + [("severity", "VARCHAR"), ("code", "VARCHAR"), ("message", "VARCHAR")]
            + INGEST_COLUMNS
            + [DAY_COLUMN],
            BY_TENANT_AND_DAY,
            "Alerts raised on devices.",
        ),
        Table(
            "logs",
            STREAM_ENVELOPE + [("level", "VARCHAR"), ("message", "VARCHAR")] + INGEST_COLUMNS + [DAY_COLUMN],
            BY_TENANT_AND_DAY,
            "Device log lines.",
        ),
        Table(
            "health",
            STREAM_ENVELOPE
            + [
                ("version", "VARCHAR"),
                ("slot", "VARCHAR"),
                ("desired_revision", "BIGINT"),
                ("error_rate", "DOUBLE"),
                ("requests", "BIGINT"),
                ("errors", "BIGINT"),
                ("crash_count", "BIGINT"),
                ("cpu_pct", "DOUBLE"),
                ("mem_mb", "DOUBLE"),
                ("heartbeat", "BIGINT"),
                ("queue_depth", "BIGINT"),
                ("update_state", "VARCHAR"),
                ("update_version", "VARCHAR"),
                ("update_reason", "VARCHAR"),
            ]
            + INGEST_COLUMNS
            + [DAY_COLUMN],
            BY_TENANT_AND_DAY,
            "Raw health reports from the devices' health stream.",
        ),
        Table(
            "device_health",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("hour", "TIMESTAMPTZ"),
                ("version", "VARCHAR"),
                ("samples", "BIGINT"),
                ("error_rate", "DOUBLE"),
                ("crash_count", "BIGINT"),
                ("cpu_pct", "DOUBLE"),
                ("mem_mb", "DOUBLE"),
                ("heartbeats", "BIGINT"),
            ],
            description="Health rolled up per device and hour.",
        ),
        Table(
            "device_state",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("namespace", "VARCHAR"),
                ("key", "VARCHAR"),
                ("field", "VARCHAR"),
                ("value", "VARCHAR"),  # JSON text
                ("hlc", "BIGINT"),
                ("node_id", "VARCHAR"),
                ("origin", "VARCHAR"),
                ("rule", "VARCHAR"),
                # edge_sync.merge.StateMerger inserts by position: keep this order = merge.STATE_DDL
                ("rules_version", "BIGINT"),
                ("updated_ms", "BIGINT"),
            ],
            description="Merged value of every state field edited on devices or centrally.",
        ),
        Table(
            "state_conflicts",
            # edge_sync.merge.StateMerger inserts by position: keep this order = merge.CONFLICTS_DDL
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("namespace", "VARCHAR"),
                ("key", "VARCHAR"),
                ("field", "VARCHAR"),
                ("rule", "VARCHAR"),
                ("loser_value", "VARCHAR"),
                ("loser_hlc", "BIGINT"),
                ("loser_node_id", "VARCHAR"),
                ("loser_origin", "VARCHAR"),
                ("winner_value", "VARCHAR"),
                ("winner_hlc", "BIGINT"),
                ("winner_node_id", "VARCHAR"),
                ("winner_origin", "VARCHAR"),
                ("rules_version", "BIGINT"),
                ("detected_ms", "BIGINT"),
            ],
            description="Every conflict where a value lost, with both sides.",
        ),
        Table(
            "state_contributions",
            # = edge_sync.merge.CONTRIBUTIONS_DDL (positional inserts)
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("namespace", "VARCHAR"),
                ("key", "VARCHAR"),
                ("field", "VARCHAR"),
                ("node_id", "VARCHAR"),
                ("hlc", "BIGINT"),
                ("value", "VARCHAR"),
                ("origin", "VARCHAR"),
                ("kind", "VARCHAR"),
                ("rule", "VARCHAR"),
            ],
            description="The state merge's per-node heads and counter increments (internal to the merge).",
        ),
        Table(
            "state_edits",
            STREAM_ENVELOPE
            + [
                ("namespace", "VARCHAR"),
                ("key", "VARCHAR"),
                ("field", "VARCHAR"),
                ("value", "VARCHAR"),
                ("origin", "VARCHAR"),
            ]
            + INGEST_COLUMNS
            + [DAY_COLUMN],
            BY_TENANT_AND_DAY,
            "Raw state edits from the devices' state stream, exactly once per (tenant, device, seq).",
        ),
        Table(
            "batches",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("stream", "VARCHAR"),
                ("first_seq", "BIGINT"),
                ("last_seq", "BIGINT"),
                ("row_count", "BIGINT"),
                ("hlc_min", "BIGINT"),
                ("hlc_max", "BIGINT"),
                ("object_key", "VARCHAR"),
                ("object_size", "BIGINT"),
                ("plaintext_sha256", "VARCHAR"),
                ("key_id", "VARCHAR"),
                ("rows_new", "BIGINT"),
                ("rows_duplicate", "BIGINT"),
                ("ingested_at", "TIMESTAMPTZ"),
            ],
            description="The ledger of accepted batch objects.",
        ),
        Table(
            "quarantine",
            [
                ("tenant_id", "VARCHAR"),  # as claimed by the object key, when parseable
                ("device_id", "VARCHAR"),
                ("object_key", "VARCHAR"),
                ("object_size", "BIGINT"),
                ("reason", "VARCHAR"),  # machine-readable
                ("detail", "VARCHAR"),
                ("quarantined_at", "TIMESTAMPTZ"),
                ("stream", "VARCHAR"),
                # hlc_too_far_ahead is deferred: reconciliation re-evaluates and may admit it
                ("deferred", "BOOLEAN"),
                ("first_seq", "BIGINT"),  # from the object key, for gap reports
                ("last_seq", "BIGINT"),
                ("resolved_at", "TIMESTAMPTZ"),  # when a deferred batch was admitted
            ],
            description="Rejected batch objects with a machine-readable reason.",
        ),
        Table(
            "evictions",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("stream", "VARCHAR"),
                ("first_seq", "BIGINT"),
                ("last_seq", "BIGINT"),
                ("count", "BIGINT"),
                ("reason", "VARCHAR"),
                ("batch_key", "VARCHAR"),
                ("ingested_at", "TIMESTAMPTZ"),
            ],
            description="Rows a device's size bound or TTL evicted before upload, per sequence range.",
        ),
        Table(
            "archived_batches",
            [
                ("tenant_id", "VARCHAR"),  # from the ledger or quarantine row
                ("device_id", "VARCHAR"),
                ("stream", "VARCHAR"),
                ("first_seq", "BIGINT"),
                ("last_seq", "BIGINT"),
                ("object_key", "VARCHAR"),  # the hot key, as the ledger knows it
                ("archive_key", "VARCHAR"),  # where the object lives now
                ("settled", "VARCHAR"),  # ingested | quarantined
                ("object_size", "BIGINT"),
                ("archived_at", "TIMESTAMPTZ"),
            ],
            description="Settled batch objects moved out of the hot prefix to the archive (edgeplat/sync/archive.py).",
        ),
        Table(
            "rollouts",
            [
                ("tenant_id", "VARCHAR"),
                ("rollout_id", "VARCHAR"),
                ("name", "VARCHAR"),
                ("release_version", "VARCHAR"),
                ("spec", "VARCHAR"),  # JSON
                ("status", "VARCHAR"),
                ("phase", "INTEGER"),
                ("created_at", "TIMESTAMPTZ"),
                ("updated_at", "TIMESTAMPTZ"),
            ],
            description="Rollouts, one row per (rollout, tenant) it targets.",
        ),
        Table(
            "rollout_events",
            [
                ("tenant_id", "VARCHAR"),
                ("rollout_id", "VARCHAR"),
                ("event_id", "VARCHAR"),  # idempotency key
                ("kind", "VARCHAR"),
                ("phase", "INTEGER"),
                ("at", "TIMESTAMPTZ"),
                ("actor", "VARCHAR"),
                ("reason", "VARCHAR"),
                ("inputs", "VARCHAR"),  # JSON
                ("seq", "BIGINT"),  # order within the rollout's log (several events share one `at`)
            ],
            description="Every rollout decision with its reason and inputs.",
        ),
        Table(
            "rollout_devices",
            [
                ("tenant_id", "VARCHAR"),
                ("rollout_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("platform", "VARCHAR"),
                ("phase", "INTEGER"),  # the phase the device was first deployed in
                ("action", "VARCHAR"),  # deploy | rollback
                ("event_id", "VARCHAR"),  # the decision that sent it
                ("at", "TIMESTAMPTZ"),
            ],
            description="Which devices a rollout has sent a deploy or rollback to, and when.",
        ),
        Table(
            "rollout_assignments",
            [
                ("tenant_id", "VARCHAR"),
                ("rollout_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("bucket", "INTEGER"),
                ("phase", "INTEGER"),  # first phase that includes the device, -1: none
                ("desired_version", "VARCHAR"),  # NULL: whatever the device ran before
                ("desired_slot", "VARCHAR"),  # in_place | inactive (blue/green)
                ("computed_at", "TIMESTAMPTZ"),
            ],
            description="A rollout's device placement (hash buckets) and the release each device should run.",
        ),
        Table(
            "device_drift",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("rollout_id", "VARCHAR"),
                ("rollout", "VARCHAR"),
                ("desired_version", "VARCHAR"),
                ("reported_version", "VARCHAR"),
                ("status", "VARCHAR"),
                ("rolled_back", "BOOLEAN"),
                ("drifted", "BOOLEAN"),
                ("computed_at", "TIMESTAMPTZ"),
            ],
            description="Desired versus reported release per device (from the latest rollout that touched it).",
        ),
        Table(
            "device_config_drift",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("namespace", "VARCHAR"),
                ("key", "VARCHAR"),
                ("field", "VARCHAR"),
                ("rule", "VARCHAR"),
                ("status", "VARCHAR"),  # pending | drifted | accepted (edgeplat/sync/config_drift.py)
                ("desired_value", "VARCHAR"),  # JSON text
                ("desired_hlc", "BIGINT"),
                ("desired_origin", "VARCHAR"),  # central | gitops:<commit> | ...
                ("reported_value", "VARCHAR"),  # the device's own value (JSON text), NULL: none reported
                ("reported_hlc", "BIGINT"),
                ("desired_revision", "BIGINT"),  # first desired-state revision seen carrying the value
                ("reported_revision", "BIGINT"),  # latest revision the device reports applied
                ("since", "TIMESTAMPTZ"),
                ("age_s", "DOUBLE"),
                ("computed_at", "TIMESTAMPTZ"),
            ],
            description="State fields whose value on the device differs from the desired one, per status, since when.",
        ),
        Table(
            "desired_records",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("revision", "BIGINT"),
                ("document", "VARCHAR"),  # the signed desired.json, as the publisher signed it
                ("recorded_at", "TIMESTAMPTZ"),
            ],
            description="The desired-state publisher's record of the last document it signed per device.",
        ),
        # edgeplat.state_rules_published: each send of the conflict rules to every device's document
        Table(
            "state_rules_published",
            [
                ("tenant_id", "VARCHAR"),  # '': platform-wide, every tenant's documents
                ("version", "BIGINT"),
                ("content_hash", "VARCHAR"),
                ("documents_rewritten", "BIGINT"),
                ("tenants", "VARCHAR"),  # JSON: tenant -> documents rewritten
                ("published_at", "TIMESTAMPTZ"),
            ],
            description="Each time the state conflict rules in force were sent to every desired-state document.",
        ),
        # edgeplat.fleet_config: desired device state from the GitOps repository's fleet/ tree
        Table(
            "device_state_sources",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("namespace", "VARCHAR"),
                ("key", "VARCHAR"),
                ("field", "VARCHAR"),
                ("value", "VARCHAR"),  # JSON text git wants on the device
                ("hlc", "BIGINT"),  # the central edit that put it there (device_state.hlc while it stands)
                ("commit", "VARCHAR"),  # origin gitops:<commit> of that edit
                ("path", "VARCHAR"),  # the layer file the value resolves from
                ("layer_kind", "VARCHAR"),  # tenant | tag | device
                ("author", "VARCHAR"),  # the commit's author, "Name <email>"
                ("committed_at", "TIMESTAMPTZ"),
                ("applied_at", "TIMESTAMPTZ"),
            ],
            description="Each value the fleet/ tree of the GitOps repository sets on a device: its commit and layer.",
        ),
        Table(
            "fleet_config_commits",
            [
                ("tenant_id", "VARCHAR"),  # one row per tenant the commit's tree names ('' if none)
                ("commit", "VARCHAR"),
                ("status", "VARCHAR"),  # applied | invalid
                ("edits", "BIGINT"),  # values set or changed
                ("withdrawn", "BIGINT"),  # values removed from git, withdrawn with a null edit
                ("devices", "BIGINT"),  # devices whose values changed
                ("errors", "VARCHAR"),  # JSON list of {path, message, fix} (invalid commits)
                ("author", "VARCHAR"),
                ("committed_at", "TIMESTAMPTZ"),
                ("applied_at", "TIMESTAMPTZ"),
            ],
            description="Each fleet/ commit the platform applied or refused, with the errors of a refused one.",
        ),
        Table(
            "device_keys",
            [
                ("tenant_id", "VARCHAR"),
                ("device_id", "VARCHAR"),
                ("key_id", "VARCHAR"),
                ("public_key", "VARCHAR"),  # raw Ed25519 public key, base64
                ("registered_at", "TIMESTAMPTZ"),
                ("revoked_at", "TIMESTAMPTZ"),
            ],
            description="The production device registry: which public keys may sign for each device.",
        ),
        Table(
            "live_rows",
            STREAM_ENVELOPE
            + [
                ("payload", "VARCHAR"),  # JSON object of the stream's payload columns
                ("key_id", "VARCHAR"),  # the device key that signed the MQTT message
                ("received_at", "TIMESTAMPTZ"),
            ],
            description="Rows the devices published live over MQTT (verified); the batch tables stay the record.",
        ),
        Table(
            "live_rejections",
            [
                ("tenant_id", "VARCHAR"),  # as claimed by the message, when parseable
                ("device_id", "VARCHAR"),
                ("stream", "VARCHAR"),
                ("seq", "BIGINT"),
                ("topic", "VARCHAR"),
                ("reason", "VARCHAR"),  # live_bad_signature, live_replayed, ...
                ("detail", "VARCHAR"),
                ("received_at", "TIMESTAMPTZ"),
            ],
            description="Live MQTT messages refused (forged, replayed, malformed), with a reason.",
        ),
        Table(
            "alert_events",
            [
                ("tenant_id", "VARCHAR"),
                ("rule", "VARCHAR"),
                ("fingerprint", "VARCHAR"),  # what fires and resolves: rule + tenant + subject
                ("state", "VARCHAR"),  # firing | resolved | seen (a duplicate while firing)
                ("device_id", "VARCHAR"),  # device alerts: the row that raised it
                ("stream", "VARCHAR"),
                ("seq", "BIGINT"),
                ("severity", "VARCHAR"),
                ("summary", "VARCHAR"),
                ("notification_id", "VARCHAR"),
                ("at", "TIMESTAMPTZ"),
            ],
            description="Alert state changes per rule and subject; device alert rows are marked once.",
        ),
        Table(
            "notifications",
            [
                ("notification_id", "VARCHAR"),
                ("tenant_id", "VARCHAR"),
                ("rule", "VARCHAR"),
                ("sink", "VARCHAR"),
                ("sink_kind", "VARCHAR"),  # slack | pagerduty | email | webhook
                ("state", "VARCHAR"),  # firing | resolved
                ("outcome", "VARCHAR"),  # delivered | failed
                ("attempts", "INTEGER"),
                ("alerts", "INTEGER"),  # how many subjects the grouped notification carries
                ("summary", "VARCHAR"),
                ("error", "VARCHAR"),
                ("created_at", "TIMESTAMPTZ"),
                ("delivered_at", "TIMESTAMPTZ"),
            ],
            description="Every notification sent to a sink and its delivery outcome.",
        ),
    )
}
