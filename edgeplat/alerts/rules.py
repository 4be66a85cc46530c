"""The alert rules file (YAML): which conditions notify, and each tenant's notification sinks.

One file for the platform (``EDGEPLAT_ALERT_RULES``, default ``$EDGEPLAT_HOME/alerts.yaml``;
``examples/alerts/alerts.yaml`` is a commented example). Secrets (webhook URLs with tokens,
PagerDuty routing keys, SMTP passwords) are named by environment variable (``*_env``) and
read when a notification is sent, never written in the file. Sinks are listed per tenant and
a tenant's notifications go only to its own list; ``platform_sinks`` receive what concerns
the platform itself (its jobs' run failures, and rules with ``to: platform``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_sync.ids import validate_id

PLATFORM_TENANT = "_platform"  # not a valid tenant id, so it never names a real tenant's sinks
DEVICE_SEVERITIES = ("critical", "error", "warning", "info")
RESOLVING_SEVERITIES = frozenset({"ok", "resolved", "clear"})
CONDITION_KINDS = (
    "device_alert",
    "rollout_rolled_back",
    "rollout_awaiting_approval",
    "quarantine_rate",
    "sync_lag",
    "devices_offline",
    "ingest_failures",
    "run_failure",
)


class RulesError(ValueError):
    """The rules file is missing or invalid; the message names the field and the fix."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Sink(_Model):
    name: str


class SlackSink(_Sink):
    """A Slack incoming webhook, or anything that takes Slack's ``{"text": ...}`` (Mattermost, Teams)."""

    kind: Literal["slack"]
    url: str | None = None
    url_env: str | None = None


class WebhookSink(_Sink):
    """A generic webhook: POSTs the notification as JSON (tenant, rule, state, alerts)."""

    kind: Literal["webhook"]
    url: str | None = None
    url_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class PagerDutySink(_Sink):
    """PagerDuty Events API v2: one trigger or resolve per alert, ``dedup_key`` = the alert's fingerprint."""

    kind: Literal["pagerduty"]
    routing_key_env: str
    url: str = "https://events.pagerduty.com/v2/enqueue"


class EmailSink(_Sink):
    """Mail over SMTP (STARTTLS and login when configured)."""

    kind: Literal["email"]
    smtp_host: str
    smtp_port: int = 25
    sender: str
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None


Sink = Annotated[SlackSink | WebhookSink | PagerDutySink | EmailSink, Field(discriminator="kind")]


class Rule(_Model):
    """One condition. Fields other than ``name``/``kind`` apply to the kinds that read them."""

    name: str
    kind: Literal[CONDITION_KINDS]  # type: ignore[valid-type]
    tenants: list[str] | None = None  # None: every tenant
    severities: list[str] = Field(default_factory=lambda: ["critical", "error"])  # device_alert
    codes: list[str] | None = None  # device_alert: None = any code
    threshold: float = 0.0  # quarantine_rate: fraction; devices_offline / ingest_failures: count
    threshold_seconds: float = 3600.0  # sync_lag
    window_minutes: float = 60.0
    min_batches: int = 10  # quarantine_rate: no verdict on less evidence
    jobs: list[str] | None = None  # run_failure: None = every job
    severity: Literal["critical", "error", "warning", "info"] = "error"
    to: Literal["tenant", "platform", "both"] = "tenant"
    sinks: list[str] | None = None  # names within the tenant's sinks; None: all of them

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [validate_id("tenant", t) for t in v]

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in DEVICE_SEVERITIES]
        if bad:
            raise ValueError(f"unknown severities {bad}: use {', '.join(DEVICE_SEVERITIES)}")
        return v

    def applies_to(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants


class Delivery(_Model):
    attempts: int = Field(default=4, ge=1, le=10)
    backoff_s: float = Field(default=0.5, ge=0)  # doubles after each failed attempt
    timeout_s: float = Field(default=5.0, gt=0)


class AlertConfig(_Model):
    """The whole rules file."""

    rules: list[Rule] = Field(default_factory=list)
    sinks: dict[str, list[Sink]] = Field(default_factory=dict)
    platform_sinks: list[Sink] = Field(default_factory=list)
    delivery: Delivery = Field(default_factory=Delivery)
    device_alert_grace_s: float = 60.0  # the schedule leaves the live path this long to notify first

    @field_validator("sinks")
    @classmethod
    def _tenant_keys(cls, v: dict[str, list]) -> dict[str, list]:
        for tenant in v:
            validate_id("tenant", tenant)
        return v

    @model_validator(mode="after")
    def _names(self) -> AlertConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {dupes}")
        for rule in self.rules:
            if rule.sinks is None:
                continue
            for tenant, sinks in self.sinks.items():
                if rule.applies_to(tenant):
                    missing = set(rule.sinks) - {s.name for s in sinks}
                    if missing and rule.tenants is not None:
                        raise ValueError(
                            f"rule {rule.name!r} names sinks {sorted(missing)} not under {tenant}"
                        )
        return self

    def sinks_for(self, tenant_id: str, rule: Rule | None) -> list[Sink]:
        """The sinks a notification of ``tenant_id`` under ``rule`` goes to: only that tenant's own."""
        if tenant_id == PLATFORM_TENANT:
            chosen = list(self.platform_sinks)
        else:
            chosen = []
            if rule is None or rule.to in ("tenant", "both"):
                chosen += self.sinks.get(tenant_id, [])
            if rule is not None and rule.to in ("platform", "both"):
                chosen += self.platform_sinks
        if rule is not None and rule.sinks is not None:
            chosen = [s for s in chosen if s.name in rule.sinks]
        return chosen

    def rules_of(self, kind: str) -> list[Rule]:
        return [r for r in self.rules if r.kind == kind]


def parse_rules(text: str, source: str = "alert rules") -> AlertConfig:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RulesError(f"{source} is not valid YAML: {exc}") from None
    try:
        return AlertConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise RulesError(f"{source}: {problems} (see examples/alerts/alerts.yaml)") from None


def load_rules(path: str | os.PathLike[str]) -> AlertConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise RulesError(
            f"alert rules file {p} does not exist: copy examples/alerts/alerts.yaml there "
            "or set EDGEPLAT_ALERT_RULES"
        ) from None
    return parse_rules(text, str(p))


def secret(env_name: str | None, literal: str | None, what: str) -> str:
    """A sink's secret: the literal from the file (local tests) or the named environment variable."""
    if literal:
        return literal
    value = os.environ.get(env_name or "")
    if not value:
        raise RulesError(f"{what}: set the environment variable {env_name or '(no *_env given)'}")
    return value
