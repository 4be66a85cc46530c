"""The alert rules file as a Dagster resource: where it is, and an engine on a lakehouse.

Local default: ``$EDGEPLAT_HOME/alerts.yaml`` when it exists (no file: nothing is evaluated,
and the run says so); production: ``EDGEPLAT_ALERT_RULES``. Sink secrets stay in the
environment; the file names them (see edgeplat/alerts/rules.py).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from edgeplat.alerts.engine import AlertEngine
from edgeplat.alerts.rules import AlertConfig, load_rules
from edgeplat.lakehouse import Lakehouse


class AlertRulesResource(dg.ConfigurableResource):
    """The rules and sinks file; ``required`` makes a missing file an error (production)."""

    rules_path: str = ""
    required: bool = False

    def config(self) -> AlertConfig | None:
        if not self.rules_path or (not self.required and not Path(self.rules_path).exists()):
            return None
        return load_rules(self.rules_path)

    def engine(self, lake: Lakehouse) -> AlertEngine | None:
        config = self.config()
        return None if config is None else AlertEngine(lake, config)
