"""Each sink kind's wire format against loopback receivers: Slack text, PagerDuty Events v2
trigger/resolve with the fingerprint as dedup_key, mail over a real SMTP server, and no retry on a 4xx."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeplat.alerts.rules import (
    Delivery,
    EmailSink,
    PagerDutySink,
    RulesError,
    SlackSink,
    WebhookSink,
    load_rules,
    parse_rules,
)
from edgeplat.alerts.sinks import Notification, deliver
from tests.support.http_double import serving
from tests.support.sink_servers import http_sink, smtp_server

POLICY = Delivery(attempts=3, backoff_s=0.0, timeout_s=2)


def note(state: str = "firing") -> Notification:
    alerts = [{"fingerprint": "dev/tenant-a/d1/hot", "summary": "d1: hot critical", "device_id": "d1"}]
    return Notification("n1", "tenant-a", "dev", state, "critical", alerts, datetime.now(UTC))


def test_slack_and_pagerduty_wire_formats(monkeypatch) -> None:
    monkeypatch.setenv("PD_KEY", "routing-123")
    with http_sink() as (url, hook):
        assert (
            deliver(SlackSink(name="s", kind="slack", url=f"{url}/slack"), note(), POLICY).outcome
            == "delivered"
        )
        pd = PagerDutySink(name="p", kind="pagerduty", routing_key_env="PD_KEY", url=f"{url}/pd")
        assert deliver(pd, note(), POLICY).outcome == "delivered"
        assert deliver(pd, note("resolved"), POLICY).outcome == "delivered"
    assert "[FIRING] dev (tenant-a)" in hook.bodies("/slack")[0]["text"]
    trigger, resolve = hook.bodies("/pd")
    assert trigger["routing_key"] == "routing-123" and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "dev/tenant-a/d1/hot"
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "d1"
    assert resolve["event_action"] == "resolve" and "payload" not in resolve


def test_mail_over_smtp() -> None:
    with smtp_server() as (port, mails):
        sink = EmailSink(
            name="m", kind="email", smtp_host="127.0.0.1", smtp_port=port, sender="a@x.org", to=["b@x.org"]
        )
        assert deliver(sink, note(), POLICY).outcome == "delivered"
    assert mails[0]["To"] == "b@x.org" and "[FIRING]" in mails[0]["Subject"]


def test_a_4xx_is_not_retried_and_a_missing_secret_fails_clearly() -> None:
    def bad_request(method, path, headers, body):
        return 400, {"error": "bad"}, {}

    with serving(bad_request, name="400") as url:
        out = deliver(WebhookSink(name="w", kind="webhook", url=url), note(), POLICY)
    assert (out.outcome, out.attempts) == ("failed", 1) and "HTTP 400" in out.error
    out = deliver(SlackSink(name="s", kind="slack", url_env="EDGEPLAT_NOT_SET_ANYWHERE"), note(), POLICY)
    assert out.outcome == "failed" and "EDGEPLAT_NOT_SET_ANYWHERE" in out.error


def test_bad_rules_name_the_field() -> None:
    with pytest.raises(RulesError, match="rules.0.kind"):
        parse_rules("rules:\n  - {name: x, kind: nonsense}\n")
    with pytest.raises(RulesError, match="invalid tenant id"):
        parse_rules("sinks:\n  'a/b': []\n")


def test_the_example_rules_file_is_valid() -> None:
    config = load_rules(Path(__file__).resolve().parents[2] / "examples" / "alerts" / "alerts.yaml")
    kinds = {r.kind for r in config.rules}
    assert kinds >= {"device_alert", "rollout_rolled_back", "quarantine_rate", "run_failure"}
    assert [s.name for s in config.sinks_for("tenant-02", None)] == ["hook"]  # never another tenant's
