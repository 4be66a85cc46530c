"""Delivering one notification to one sink: Slack-compatible webhook, PagerDuty Events v2, SMTP, webhook.

Each delivery is retried with exponential backoff and jitter on what may pass (connection
errors, timeouts, HTTP 5xx and 429); a 4xx answer is a configuration error and fails at
once. The outcome (delivered or failed, attempts, last error) goes back to the engine,
which writes it to ``notifications``.
"""

from __future__ import annotations

import json
import random
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import requests

from edgeplat.alerts.rules import Delivery, EmailSink, PagerDutySink, SlackSink, WebhookSink, secret

PAGERDUTY_SEVERITIES = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


@dataclass
class Notification:
    """A grouped notification: one tenant, one rule, one state, the alerts it carries."""

    notification_id: str
    tenant_id: str
    rule: str
    state: str  # firing | resolved
    severity: str
    alerts: list[dict[str, Any]]  # each: fingerprint, summary, and device/stream/seq for device alerts
    created_at: datetime

    @property
    def summary(self) -> str:
        head = f"[{self.state.upper()}] {self.rule} ({self.tenant_id})"
        first = "; ".join(a["summary"] for a in self.alerts[:3])
        more = f" and {len(self.alerts) - 3} more" if len(self.alerts) > 3 else ""
        return f"{head}: {first}{more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "tenant_id": self.tenant_id,
            "rule": self.rule,
            "state": self.state,
            "severity": self.severity,
            "summary": self.summary,
            "alerts": self.alerts,
            "created_at": self.created_at.isoformat(),
        }


class DeliveryError(Exception):
    """A delivery attempt failed; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Outcome:
    outcome: str  # delivered | failed
    attempts: int
    error: str | None = None
    delivered_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _post(url: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None) -> None:
    try:
        resp = requests.post(url, json=body, timeout=timeout, headers=headers or {})
    except requests.RequestException as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from None
    if resp.status_code >= 500 or resp.status_code == 429:
        raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}", retryable=True)
    if resp.status_code >= 400:
        raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}", retryable=False)


def send_slack(sink: SlackSink, n: Notification, timeout: float) -> None:
    lines = [n.summary] + [f"• {a['summary']}" for a in n.alerts[:20]]
    _post(secret(sink.url_env, sink.url, f"sink {sink.name}"), {"text": "\n".join(lines)}, timeout)


def send_webhook(sink: WebhookSink, n: Notification, timeout: float) -> None:
    _post(secret(sink.url_env, sink.url, f"sink {sink.name}"), n.to_json(), timeout, sink.headers)


def send_pagerduty(sink: PagerDutySink, n: Notification, timeout: float) -> None:
    key = secret(sink.routing_key_env, None, f"sink {sink.name}")
    for alert in n.alerts:  # one PagerDuty alert per fingerprint, so a resolve closes exactly it
        body: dict[str, Any] = {
            "routing_key": key,
            "event_action": "trigger" if n.state == "firing" else "resolve",
            "dedup_key": alert["fingerprint"],
        }
        if n.state == "firing":
            body["payload"] = {
                "summary": alert["summary"][:1000],
                "source": alert.get("device_id") or f"edgeplat/{n.tenant_id}",
                "severity": PAGERDUTY_SEVERITIES.get(n.severity, "error"),
                "group": n.tenant_id,
                "class": n.rule,
                "custom_details": alert,
            }
        _post(sink.url, body, timeout)


def send_email(sink: EmailSink, n: Notification, timeout: float) -> None:
    msg = EmailMessage()
    msg["Subject"] = n.summary[:200]
    msg["From"] = sink.sender
    msg["To"] = ", ".join(sink.to)
    msg.set_content(json.dumps(n.to_json(), indent=2, default=str))
    try:
        with smtplib.SMTP(sink.smtp_host, sink.smtp_port, timeout=timeout) as smtp:
            if sink.starttls:
                smtp.starttls()
            if sink.username:
                smtp.login(sink.username, secret(sink.password_env, None, f"sink {sink.name}"))
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(
            f"SMTP {exc.smtp_code}: {exc.smtp_error!r}",
            retryable=exc.smtp_code >= 400 and exc.smtp_code < 500,
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from None


SENDERS: dict[str, Callable[[Any, Notification, float], None]] = {
    "slack": send_slack,
    "webhook": send_webhook,
    "pagerduty": send_pagerduty,
    "email": send_email,
}


def deliver(
    sink: Any,
    n: Notification,
    policy: Delivery,
    *,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] | None = None,
) -> Outcome:
    """Send ``n`` to ``sink``, retrying with backoff; never raises."""
    delay = policy.backoff_s
    error = None
    for attempt in range(1, policy.attempts + 1):
        try:
            SENDERS[sink.kind](sink, n, policy.timeout_s)
            return Outcome("delivered", attempt, None, (now or _utcnow)())
        except DeliveryError as exc:
            error = str(exc)
            if not exc.retryable:
                return Outcome("failed", attempt, error)
        except Exception as exc:  # a missing secret or a bad sink: no retry helps
            return Outcome("failed", attempt, f"{type(exc).__name__}: {exc}")
        if attempt < policy.attempts:
            sleep(delay * (0.5 + random.random() / 2))
            delay *= 2
    return Outcome("failed", policy.attempts, error)


def _utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)
