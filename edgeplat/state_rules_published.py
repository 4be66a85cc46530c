"""Which conflict rules the devices were last sent, and whether the rules in force must be sent.

A rules change reaches devices only when every desired-state document is rewritten to carry
it (:mod:`edgeplat.state_rules_rollout`). Each completed send is recorded in the
``state_rules_published`` lakehouse table (version, content hash, documents rewritten), so a
watcher compares the rules in force with the last send and asks for a new one only when they
differ. The request's key names the version, the content hash and how many sends came before,
so asking again before the send completes is the same request, and going back to rules sent
earlier (the packaged ones, after an operator's) is a new one.

The rules in force are checked first: a file that does not load, or that changed under a
version the central merge recorded with other content, sends nothing and says why and where.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from edge_sync.rules import RuleSet, default_rules
from edgeplat.lakehouse import Lakehouse
from edgeplat.sync.central_state import RULES_VERSIONS_TABLE

TABLE = "state_rules_published"
PLATFORM = ""  # tenant_id of a platform-wide row: a send covers every tenant's documents


@dataclass(frozen=True)
class PublishCheck:
    """The watcher's answer: ``run_key`` of the send to request, or None and ``reason`` why not."""

    run_key: str | None
    reason: str
    version: int | None = None
    content_hash: str | None = None


def record_published(con: duckdb.DuckDBPyConnection, rules: RuleSet, rewritten: Mapping[str, int]) -> None:
    """Record that every document now carries ``rules`` (``rewritten``: tenant -> documents rewritten)."""
    con.execute(
        f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?)",
        [
            PLATFORM,
            rules.version,
            rules.content_hash,
            sum(rewritten.values()),
            json.dumps(dict(sorted(rewritten.items()))),
            datetime.now(UTC),
        ],
    )


def published(lake: Lakehouse) -> list[tuple[int, str]]:
    """(version, content hash) of every recorded send, oldest first."""
    with lake.session(read_only=True) as con:
        return [
            (v, h)
            for v, h in con.execute(
                f"SELECT version, content_hash FROM {TABLE} WHERE tenant_id = ? ORDER BY published_at",
                [PLATFORM],
            ).fetchall()
        ]


def check_publish(load: Callable[[], RuleSet], source: str, lake: Lakehouse) -> PublishCheck:
    """Whether the rules ``load`` returns (read from ``source``, named in reasons) must be sent."""
    try:
        rules = load()
    except ValueError as exc:  # RulesError: the file, the field and the fix
        return PublishCheck(None, f"state rules from {source} are not valid, nothing sent to devices: {exc}")
    lake.ensure_created()
    used = _versions_used(lake)
    other = {h for v, h in used if v == rules.version and h != rules.content_hash}
    if other:
        return PublishCheck(
            None,
            f"state rules from {source} changed under version {rules.version}, which the central merge "
            f"used with other content (hash {sorted(other)[0][:12]}): nothing sent to devices; bump "
            "`version` in the rules file",
        )
    sent = published(lake)
    current = (rules.version, rules.content_hash)
    label = f"state rules version {rules.version} ({rules.content_hash[:12]}) from {source}"
    if sent and sent[-1] == current:
        return PublishCheck(None, f"{label} already sent to devices", *current)
    packaged = default_rules().content_hash
    if not sent and rules.content_hash == packaged and all(h == packaged for _, h in used):
        return PublishCheck(None, f"{label}: the packaged rules, and no others were ever used", *current)
    key = f"state-rules:v{rules.version}:{rules.content_hash[:16]}:{len(sent)}"
    return PublishCheck(key, f"{label} not sent to devices yet", *current)


def _versions_used(lake: Lakehouse) -> list[tuple[int, str]]:
    """(version, content hash) of every rules version the central merge used (none before its first)."""
    with lake.session(read_only=True) as con:
        try:
            return con.execute(f"SELECT version, content_hash FROM {RULES_VERSIONS_TABLE}").fetchall()
        except duckdb.CatalogException:
            return []
