"""The device's live publisher without a broker: record() never waits for it, a full queue costs a
counter (the batch still carries every row), and the [live] section of device.toml parses."""

from __future__ import annotations

import json
import tomllib

import pytest

from edge_sync.config import ConfigError, parse_config
from edge_sync.identity import SIGNATURE_BYTES, DeviceIdentity
from edge_sync.keys import LocalKeyring
from edge_sync.live_message import VERSION, LiveMessageError, RowSigner, parse, sign_row, topic_for, verify
from edge_sync.live_publisher import LiveConfig, LivePublisher
from tests.support.device import agent_on
from tests.support.processes import HOST, free_port


def test_an_unreachable_broker_costs_only_a_counter(tmp_path) -> None:
    agent, identity = agent_on(tmp_path, "t1", "d1", LocalKeyring(tmp_path / "keys"))
    with agent:
        live = agent.attach_live(
            LivePublisher(identity, LiveConfig(host=HOST, port=free_port(), queue_size=5))
        )
        for i in range(50):
            agent.record("health", {"heartbeat": i})
        agent.record("telemetry", {"metric": "cpu", "value": 1.0})  # not published: no sampling set
        stats = live.stats()
        assert stats["connected"] is False and stats["published"] == 0
        assert stats["offered"] == 50 and stats["dropped_queue_full"] >= 50 - 5 - 1  # one may be held
        assert agent.cache.stats()["streams"]["health"]["last_seq"] == 50  # every row cached


def test_telemetry_is_sampled_when_asked(tmp_path) -> None:
    agent, identity = agent_on(tmp_path, "t1", "d1", LocalKeyring(tmp_path / "keys"))
    with agent:
        cfg = LiveConfig(host=HOST, port=free_port(), telemetry_sample_every=10, queue_size=1000)
        live = agent.attach_live(LivePublisher(identity, cfg))
        for i in range(100):
            agent.record("telemetry", {"metric": "cpu", "value": float(i)})
        assert live.stats()["offered"] == 10


def test_a_message_verifies_only_with_its_device_key_and_unchanged(tmp_path) -> None:
    agent, identity = agent_on(tmp_path, "t1", "d1", LocalKeyring(tmp_path / "keys"))
    agent.close()
    payload = sign_row(
        identity, "alerts", 3, 7 << 16, 1000, {"severity": "critical", "code": "c", "message": "m"}
    )
    topic = topic_for("t1", "d1", "alerts")
    batch = parse(topic, payload)
    verify(batch, [(identity.key_id, identity.public_key_bytes())])
    row = batch.rows[0]
    assert (row.seq, row.hlc, row.ts_ms, row.row["code"]) == (3, 7 << 16, 1000, "c")
    tampered = payload.replace(b'"code":"c"', b'"code":"x"')
    with pytest.raises(LiveMessageError, match="live_bad_signature"):
        verify(parse(topic, tampered), [(identity.key_id, identity.public_key_bytes())])
    with pytest.raises(LiveMessageError, match="live_topic_mismatch"):
        parse(topic_for("t1", "d2", "alerts"), payload)


def test_the_live_section_of_device_toml(tmp_path) -> None:
    base = """
tenant_id = "t1"
device_id = "d1"
cache_path = "cache.duckdb"
identity_path = "id.pem"
platform_public_key_path = "platform.pub"
[object_store]
url = "objects"
[cache_key]
source = "file"
path = "cache.key"
[keys]
source = "local"
keyring_dir = "keys"
"""
    text = base + '[live]\nhost = "broker"\nport = 8883\ntls = true\nca_path = "ca.pem"\n'
    cfg = parse_config(tomllib.loads(text), base=tmp_path)
    assert cfg.live is not None and cfg.live.streams == ["alerts", "health"] and cfg.live.tls
    assert cfg.live.ca_path == tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match="live.streams"):
        parse_config(tomllib.loads(base + '[live]\nhost = "b"\nstreams = ["state"]\n'), base=tmp_path)


def test_offered_rows_are_snapshots_stamped_as_cached(tmp_path) -> None:
    agent, identity = agent_on(tmp_path, "t1", "d1", LocalKeyring(tmp_path / "keys"))
    with agent:
        live = agent.attach_live(LivePublisher(identity, LiveConfig(host=HOST, port=free_port())))
        row = {"heartbeat": 1, "ts": 1_700_000_000_000}
        first = agent.record("health", row)
        row["heartbeat"] = 2  # the caller reuses its dict
        second = agent.record("health", row)
        queued = list(live._pending)
    rows = [queued[i : i + 5] for i in range(0, len(queued), 5)]
    assert [(s, seq, hlc, ts, r["heartbeat"]) for s, seq, hlc, ts, r in rows] == [
        ("health", *first, 1_700_000_000_000, 1),
        ("health", *second, 1_700_000_000_000, 2),
    ]


def test_the_signer_encodes_the_same_bytes_as_the_whole_document(tmp_path) -> None:
    identity = DeviceIdentity.generate("t1", "d1")
    rows = [(1, 1 << 16, 5, {"severity": "critical", "code": "x", "message": "é"})]
    payload = RowSigner(identity).sign("alerts", rows)
    whole = {
        "v": VERSION,
        "tenant_id": "t1",
        "device_id": "d1",
        "stream": "alerts",
        "key_id": identity.key_id,
        "rows": rows,
    }
    assert payload[SIGNATURE_BYTES:] == json.dumps(whole, separators=(",", ":")).encode()
    message = parse(topic_for("t1", "d1", "alerts"), payload)
    verify(message, [(identity.key_id, identity.public_key_bytes())])
    assert message.rows[0].row["message"] == "é"
