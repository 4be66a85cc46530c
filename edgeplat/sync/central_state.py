"""The central merged state: one place that names its tables and builds their merger.

Device uploads (the ingest), operator edits (``central_edits``) and edits stamped elsewhere
(``stamped_edits``) all merge into the same three lakehouse tables with the shared
:class:`edge_sync.merge.StateMerger`; building it here keeps them on the same tables.

It also holds the rules version to its content: ``state_rules_versions`` records the content
hash of every rules version the central merge used, and a merge under a version recorded with
other content is refused (the rules file changed without bumping ``version``), so a
``rules_version`` on a state or conflict row always names one set of rules.
"""

from __future__ import annotations

import json
import time

import duckdb

from edge_sync.merge import StateMerger
from edge_sync.rules import RulesError, RuleSet

STATE_TABLE = "device_state"
CONFLICTS_TABLE = "state_conflicts"
CONTRIBUTIONS_TABLE = "state_contributions"
RULES_VERSIONS_TABLE = "state_rules_versions"  # platform-wide (no tenant): one row per rules version


def central_merger(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> StateMerger:
    """A merger of edits into the central state tables on the lakehouse connection ``con``."""
    check_rules_version(con, rules)
    return StateMerger(
        con,
        rules,
        state_table=STATE_TABLE,
        conflicts_table=CONFLICTS_TABLE,
        contributions_table=CONTRIBUTIONS_TABLE,
    )


def check_rules_version(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> None:
    """Record ``rules``' version and content hash, or refuse a version recorded with other content."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {RULES_VERSIONS_TABLE} "
        "(version BIGINT, content_hash VARCHAR, document VARCHAR, recorded_ms BIGINT)"
    )
    known = {
        h
        for (h,) in con.execute(
            f"SELECT content_hash FROM {RULES_VERSIONS_TABLE} WHERE version = ?", [rules.version]
        ).fetchall()
    }
    if known and rules.content_hash not in known:
        raise RulesError(
            f"state rules version {rules.version} was used by the central merge with other content "
            f"(hash {sorted(known)[0][:12]}, now {rules.content_hash[:12]}): every change of the rules "
            "must bump `version` in the rules file, so each rules_version on a state row names one set "
            "of rules"
        )
    if not known:
        con.execute(
            f"INSERT INTO {RULES_VERSIONS_TABLE} VALUES (?, ?, ?, ?)",
            [
                rules.version,
                rules.content_hash,
                json.dumps(rules.document(), sort_keys=True),
                time.time_ns() // 1_000_000,
            ],
        )
