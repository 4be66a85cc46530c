"""The conflict rules a device merges with: its configured ones, or the platform's from the document.

The platform puts the operator's rules in the desired-state document (``state_rules``,
``edge_sync.desired``) so the device merges central edits as the platform does. The device
adopts them when they verify (their content hash matches) and every resolver they name is
installed here: resolver code named by a file path is never loaded from a document, modules
and entry points only if the device already has them (docs/security.md). Otherwise it keeps
its previous rules, raises an ``alerts`` row (``desired_rules_refused``, once per reason) and
records the refusal in ``_agent`` state (key ``rules``, field ``refused``) for ``status``.
A document without ``state_rules`` means the packaged rules: the device goes back to its
configured ones.

Adopted rules are kept in ``_agent`` state (key ``rules``: ``version``, ``content_hash``,
``document``) so a restarted agent merges under them before its next pull.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from edge_sync.cache import DeviceCache
from edge_sync.desired import StateRulesDoc
from edge_sync.rules import RulesError, RuleSet, parse_rules

log = logging.getLogger(__name__)

RULES_KEY = "rules"
REFUSED_CODE = "desired_rules_refused"

# (key, field) -> value upserts of _agent state, and one alert (severity, code, message)
Book = Callable[[dict[tuple[str, str], object]], None]
Alert = Callable[[str, str, str], None]


class DeviceRules:
    """The rules the device's downlink merges with, following the desired-state document."""

    def __init__(self, base: RuleSet, cache: DeviceCache, namespace: str) -> None:
        self.base = base
        self.active = base
        self._cache, self._namespace = cache, namespace
        stored = cache.get_state(namespace, RULES_KEY).get("document")
        if stored:
            try:
                self.active = self._parse(json.loads(stored))
            except (RulesError, ValueError) as exc:  # a resolver uninstalled since: back to base
                log.warning("adopted state rules no longer load, merging with the configured ones: %s", exc)

    @staticmethod
    def _parse(document: dict) -> RuleSet:
        return parse_rules(document, source="state rules of the desired-state document", allow_paths=False)

    def follow(self, doc: StateRulesDoc | None, book: Book, alert: Alert) -> str | None:
        """Adopt ``doc`` (None: the configured rules); a refusal message, or None when adopted."""
        if doc is None or doc.content_hash == self.active.content_hash:
            if doc is None and self.active is not self.base:
                self.active = self.base
                book(self._record(self.base, document=None))
            elif self._cache.get_state(self._namespace, RULES_KEY).get("refused"):
                book({(RULES_KEY, "refused"): None})  # refused before, in force now
            return None
        try:
            rules = self._parse(doc.rules)
        except RulesError as exc:
            return self._refuse(
                f"state rules version {doc.version} refused, keeping version {self.active.version}: {exc}",
                book,
                alert,
            )
        if rules.content_hash != doc.content_hash or rules.version != doc.version:
            return self._refuse(
                f"state rules version {doc.version} refused: the document's rules do not match its version "
                f"and content hash {doc.content_hash[:12]} (they hash to {rules.content_hash[:12]}, "
                f"version {rules.version})",
                book,
                alert,
            )
        if rules.version == self.active.version:
            return self._refuse(
                f"state rules version {doc.version} refused: this device merges with different rules under the "
                "same version; a rules change must bump the version in the rules file",
                book,
                alert,
            )
        self.active = rules
        book(self._record(rules, document=json.dumps(doc.rules, sort_keys=True)))
        return None

    def _record(self, rules: RuleSet, *, document: str | None) -> dict[tuple[str, str], object]:
        return {
            (RULES_KEY, "version"): rules.version,
            (RULES_KEY, "content_hash"): rules.content_hash,
            (RULES_KEY, "document"): document,
            (RULES_KEY, "refused"): None,
        }

    def _refuse(self, message: str, book: Book, alert: Alert) -> str:
        log.warning("%s", message)
        alert("warning", REFUSED_CODE, message)
        book({(RULES_KEY, "refused"): message[:500]})
        return message
