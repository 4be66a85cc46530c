"""The production settings of the live path against a real Mosquitto: TLS with the platform's CA,
a client certificate per device (the broker takes the certificate's name as the user) and an ACL
that confines each device to its own topics; the central subscriber connects the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sync.identity import DeviceIdentity
from edge_sync.live_publisher import LiveConfig, LivePublisher
from edgeplat.live.subscriber import BrokerSettings, LiveSubscriber
from tests.support.fleet import Fleet
from tests.support.mosquitto import running_mosquitto
from tests.support.processes import HOST
from tests.support.services import started
from tests.support.sink_servers import wait_for
from tests.support.tls_certs import TestPki

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_tls_with_per_device_certificates_and_topic_acl(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    cert, key = pki.server
    acl = tmp_path / "acl"
    acl.write_text(
        "user edgeplat-live\ntopic read edgeplat/#\n\n"
        "pattern write edgeplat/tenant-a/%u/#\n"  # a device's certificate name is its device id
    )
    extra = (
        f"cafile {pki.ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n"
        f"use_identity_as_username true\nacl_file {acl}\n"
    )
    central = Fleet(tmp_path / "central")
    rows = []
    with started("Mosquitto", running_mosquitto(tmp_path, extra)) as broker:
        sub_cert, sub_key = pki.client("edgeplat-live")
        sub = LiveSubscriber(
            central.lake,
            central.registry,
            BrokerSettings(
                HOST,
                broker.port,
                tls=True,
                ca_path=str(pki.ca),
                cert_path=str(sub_cert),
                key_path=str(sub_key),
            ),
            on_rows=rows.extend,
        ).start()
        publishers = []
        try:
            assert sub.subscribed.wait(10), "the subscriber did not connect over TLS"
            for device in ("dev-1", "dev-2"):
                identity = DeviceIdentity.generate("tenant-a", device)
                central.registry.register("tenant-a", device, identity.public_key_bytes())
                dev_cert, dev_key = pki.client(device)
                config = LiveConfig(
                    host=HOST,
                    port=broker.port,
                    tls=True,
                    ca_path=pki.ca,
                    cert_path=dev_cert,
                    key_path=dev_key,
                )
                publishers.append((identity, LivePublisher(identity, config).start()))
            # dev-2's connection (its certificate) publishing on dev-1's topic: the broker's ACL drops it
            impostor = DeviceIdentity.generate("tenant-a", "dev-1")
            _, dev2 = publishers[1]
            dev2.identity = impostor
            for identity, pub in publishers:
                pub.offer(
                    "alerts",
                    1,
                    1 << 16,
                    0,
                    {"severity": "critical", "code": identity.device_id, "message": "x"},
                )
            assert wait_for(lambda: rows, timeout=5.0), "nothing arrived over TLS"
            wait_for(lambda: False, timeout=1.0)  # time for a message the broker should have dropped
        finally:
            for _, pub in publishers:
                pub.close()
            sub.stop()
    assert [(r.device_id, r.row["code"]) for r in rows] == [("dev-1", "dev-1")]
    assert publishers[0][1].stats()["published"] == 1
    assert sub.counters["refused"] == 0  # the impostor's message never reached the subscriber
