"""The live path end to end against a real Mosquitto: device record() -> MQTT -> verify ->
live_rows -> alert rules -> sinks (loopback HTTP and a real SMTP server); then the batch."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from edge_sync.agent import DeviceAgent
from edge_sync.config import load_config
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.live_message import parse, sign_row, topic_for, verify
from edgeplat.alerts.engine import AlertEngine
from edgeplat.alerts.rules import parse_rules
from edgeplat.live.subscriber import BrokerSettings, LiveSubscriber
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.reconcile import list_batch_keys
from tests.support.processes import HOST
from tests.support.sink_servers import http_sink, smtp_server, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

RULES = """
rules:
  - name: device-critical
    kind: device_alert
    severities: [critical, error]
sinks:
  tenant-a:
    - {{name: hook, kind: webhook, url: "{url}/hook"}}
    - {{name: mail, kind: email, smtp_host: 127.0.0.1, smtp_port: {smtp}, sender: edgeplat@example.org,
       to: [ops@example.org]}}
delivery: {{attempts: 3, backoff_s: 0.05, timeout_s: 2}}
device_alert_grace_s: 0
"""


def subscriber(central, broker, engine) -> LiveSubscriber:
    sub = LiveSubscriber(
        central.lake, central.registry, BrokerSettings(HOST, broker.port), on_rows=engine.on_live_rows
    ).start()
    assert sub.subscribed.wait(5), "the subscriber did not connect to Mosquitto"
    return sub


def land_batches(central) -> None:
    env = central.env()
    ingest_objects(env, list(list_batch_keys(env)))


def alert_seqs(central) -> list[tuple]:
    return central.count("SELECT device_id, seq, code FROM alerts ORDER BY seq")


def test_an_alert_reaches_webhook_and_mail_within_5s_and_lands_once(central, broker, device) -> None:
    with http_sink() as (url, hook), smtp_server() as (smtp, mails):
        engine = AlertEngine(central.lake, parse_rules(RULES.format(url=url, smtp=smtp)))
        sub = subscriber(central, broker, engine)
        try:
            seq, _ = device.record("alerts", {"severity": "critical", "code": "overheat", "message": "92 C"})
            assert wait_for(lambda: hook.bodies("/hook"), timeout=5.0), "no webhook delivery within 5 s"
            assert wait_for(lambda: mails, timeout=5.0), "no mail within 5 s"
        finally:
            sub.stop()
        body = hook.bodies("/hook")[0]
        assert (body["tenant_id"], body["rule"], body["state"]) == ("tenant-a", "device-critical", "firing")
        assert [(a["device_id"], a["seq"], a["code"]) for a in body["alerts"]] == [("dev-1", seq, "overheat")]
        assert "overheat" in mails[0].get_payload() and "[FIRING]" in mails[0]["Subject"]

        device.sync_once()
        land_batches(central)
        land_batches(central)  # the same batch again changes nothing
        assert alert_seqs(central) == [("dev-1", seq, "overheat")]
        assert engine.evaluate().fired == 0  # the landed row was already notified live
        assert len(hook.bodies("/hook")) == 1 and len(mails) == 1
        outcomes = central.count("SELECT sink, state, outcome, attempts FROM notifications ORDER BY sink")
        assert outcomes == [("hook", "firing", "delivered", 1), ("mail", "firing", "delivered", 1)]


def test_broker_down_while_recording_then_up_nothing_lost_nothing_doubled(central, broker, device) -> None:
    with http_sink() as (url, hook):
        engine = AlertEngine(central.lake, parse_rules(RULES.format(url=url, smtp=1)))
        engine.config.sinks["tenant-a"] = engine.config.sinks["tenant-a"][:1]  # the webhook only
        sub = subscriber(central, broker, engine)
        try:
            device.record("alerts", {"severity": "error", "code": "before", "message": "up"})
            assert wait_for(lambda: hook.bodies(), timeout=5.0)
            broker.stop()
            for code in ("down-1", "down-2", "down-3"):
                device.record("alerts", {"severity": "critical", "code": code, "message": "broker down"})
            broker.start()
            device.record("alerts", {"severity": "error", "code": "after", "message": "up again"})
            codes = lambda: {a["code"] for b in hook.bodies() for a in b["alerts"]}  # noqa: E731
            wait_for(lambda: codes() >= {"before", "after"}, timeout=10.0)
        finally:
            sub.stop()
        # Whatever the live path carried, the batch lands every row once, and rows the live path
        # did not deliver (the broker dropped them while nobody was subscribed) notify from it.
        device.sync_once()
        land_batches(central)
        engine.evaluate()
        engine.evaluate()
        want = ["before", "down-1", "down-2", "down-3", "after"]
        assert [c for _, _, c in alert_seqs(central)] == want
        notified = sorted(a["code"] for b in hook.bodies() for a in b["alerts"])
        assert notified == sorted(want), "each alert notified exactly once"
        live = central.count("SELECT count(*), count(DISTINCT seq) FROM live_rows")[0]
        assert live[0] == live[1], "a live row stored twice"
        assert device.live.stats()["dropped_queue_full"] == 0


def test_forged_and_replayed_messages_are_refused(central, broker, device) -> None:
    with http_sink() as (url, hook):
        engine = AlertEngine(central.lake, parse_rules(RULES.format(url=url, smtp=1)))
        sub = subscriber(central, broker, engine)
        spy_got: list[bytes] = []
        spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy")
        spy.on_message = lambda c, u, m: spy_got.append(bytes(m.payload))
        spy.connect(HOST, broker.port)
        spy.subscribe("edgeplat/#", qos=1)
        spy.loop_start()
        try:
            wait_for(lambda: False, timeout=0.3)  # the spy's subscription settles
            device.record("alerts", {"severity": "critical", "code": "genuine", "message": "x"})
            assert wait_for(lambda: spy_got and hook.bodies(), timeout=5.0)
            topic = topic_for("tenant-a", "dev-1", "alerts")
            impostor = DeviceIdentity.generate("tenant-a", "dev-1")  # right ids, unregistered key
            forged = sign_row(
                impostor, "alerts", 99, 2**60, 0, {"severity": "critical", "code": "forged", "message": "x"}
            )
            tampered = spy_got[0].replace(b'"code":"genuine"', b'"code":"tampered"')
            assert tampered != spy_got[0]
            wrong_topic = topic_for("tenant-b", "dev-1", "alerts")
            for t, payload in [
                (topic, spy_got[0]),  # the genuine message again: a replay
                (topic, forged),
                (topic, tampered),
                (wrong_topic, spy_got[0]),
                (topic, b"\x00" * 64 + b"not json"),
            ]:
                spy.publish(t, payload, qos=1).wait_for_publish(5)
            assert wait_for(lambda: sub.counters["refused"] >= 5, timeout=5.0), sub.counters
        finally:
            spy.loop_stop()
            spy.disconnect()
            sub.stop()
        reasons = sorted(r for (r,) in central.count("SELECT reason FROM live_rejections"))
        assert reasons == sorted(
            [
                "live_replayed",
                "live_bad_signature",
                "live_bad_signature",
                "live_topic_mismatch",
                "live_not_json",
            ]
        )
        assert [a["code"] for b in hook.bodies() for a in b["alerts"]] == ["genuine"]
        assert central.count("SELECT payload->>'code' FROM live_rows") == [("genuine",)]


def test_the_running_agent_of_a_device_toml_publishes_and_one_shots_do_not(tmp_path, broker) -> None:
    root = tmp_path / "device"
    root.mkdir()
    identity = DeviceIdentity.generate("tenant-a", "dev-9")
    identity.save(root / "id.pem")
    (root / "platform.pub").write_text(PlatformSigner.generate().public_key_bytes().hex() + "\n")
    (root / "cache.key").write_text(bytes(range(32)).hex() + "\n")
    (root / "cache.key").chmod(0o600)
    (root / "device.toml").write_text(
        'tenant_id = "tenant-a"\ndevice_id = "dev-9"\ncache_path = "cache.duckdb"\nidentity_path = "id.pem"\n'
        'platform_public_key_path = "platform.pub"\n[cache_key]\nsource = "file"\npath = "cache.key"\n'
        '[keys]\nsource = "local"\nkeyring_dir = "keyring"\n[object_store]\nurl = "store"\n'
        f'[live]\nhost = "{HOST}"\nport = {broker.port}\n'
    )
    got: list[tuple[str, bytes]] = []
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy")
    spy.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload)))
    spy.connect(HOST, broker.port)
    spy.subscribe("edgeplat/#", qos=1)
    spy.loop_start()
    agent = DeviceAgent(load_config(root / "device.toml"))
    assert agent.live is None  # `edge-sync status` / `sync-once` open the agent without publishing
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), kwargs={"handle_signals": False})
    runner.start()
    try:
        assert wait_for(lambda: agent.live is not None and agent.live.stats()["connected"], timeout=5.0)
        seq, _ = agent.record("alerts", {"severity": "critical", "code": "door", "message": "open"})
        assert wait_for(lambda: got, timeout=5.0), "nothing published"
    finally:
        stop.set()
        runner.join(timeout=30)
        spy.loop_stop()
        spy.disconnect()
    topic, payload = got[0]
    batch = parse(topic, payload)
    verify(batch, [(identity.key_id, identity.public_key_bytes())])
    assert topic == topic_for("tenant-a", "dev-9", "alerts")
    assert [(r.seq, r.row["code"]) for r in batch.rows] == [(seq, "door")]
